"""Fixed word lists (more first names and surnames, common English words), so that word tasks depend on no
installed data.

Used with the first names of `s2d.engine.core.tasks.base` by `last_letter_one`: a larger vocabulary than those
names alone gives more distinct questions, enough for a few hundred held-out words that training never sees.
"""

MORE_NAMES = """
Abel Abram Ada Adela Adele Adeline Adolfo Agatha Agnes Agustin Ahmed Aida Aileen Ainsley Aisha Alana Alaric Alba
Alberta Alberto Alden Aldo Aleksandr Alessandra Alessandro Alfonso Alfred Alfredo Ali Alina Alisha Alistair Allegra
Alonso Alonzo Alvaro Alvin Amalia Amanda Amara Ambrose Amelie Amos Anastasia Anders Andrea Andreas Andrei Andres
Angelo Angus Anika Annabel Annalise Annette Anselm Antoine Antonio Antonia Anya Apollo Araceli Archer Archibald Ariana
Arianna Armand Armando Arnav Arnold Arturo Astrid Athena Atticus Augustin Augustus Aurelia Aurora Avery Axel Barnaby
Barrett Bartholomew Basil Beatriz Beckett Belinda Bella Benedict Benita Bennett Bernadette Bertram Bethany Bettina
Blaine Blanca Bodhi Boris Bradley Brady Brendan Brianna Bridget Brigitte Brody Bronwen Bruno Byron Caitlin Calista
Callum Calvin Cameron Camille Candace Carina Carla Carlos Carlton Carmela Carolina Casimir Cassandra Cassius Catalina
Cathleen Cecil Celeste Cesar Chandler Charlene Charlotte Chester Christina Christopher Cicely Cillian Clarence
Clarissa Claudia Claudio Clement Clementine Clifford Clinton Colette Conrad Constance Constantine Cordelia Corinne
Cornelius Cosimo Courtney Cristina Cristobal Cyrus Dahlia Dakota Damon Danica Dante Darius Darnell Davina Declan
Deirdre Delphine Demetrius Desmond Dexter Dimitri Dominique Donovan Dorian Douglas Drusilla Duncan Dustin Eamon Edmund
Edwin Efrain Elaine Eleanor Eliana Elias Elinor Elisa Elisabeth Eloise Elvira Emeline Emerson Emilia Emiliano Emmett
Enrique Enzo Ephraim Erasmus Ernesto Esme Esteban Estelle Eugene Eugenia Eulalia Eustace Evangeline Everett Fabian
Fabiola Farah Fatima Federico Felicity Felipe Ferdinand Fernanda Fernando Fidel Filippo Finnegan Fitzgerald Flavia
Fletcher Florence Florian Francesca Francesco Franklin Frederick Gabriela Gaston Genevieve Geoffrey Georgina Geraldine
Gertrude Giacomo Gianna Gilbert Giovanni Giselle Giuseppe Godfrey Gonzalo Gordon Graciela Graham Gregory Griffin
Guadalupe Gustavo Gwendolyn Hadrian Hamish Hannah Harriet Harrison Hector Heidi Henrietta Herbert Herman Hermione
Hilary Horace Horatio Howard Hubert Humberto Ignatius Ileana Imogen Ingrid Irina Isadora Isidore Isolde Ivanka Jacinta
Jacqueline Jasper Javier Jeremiah Jessamine Jethro Joaquin Jocelyn Johanna Jolene Josefina Josephine Josiah Juanita
Julius Justine Katarina Katherine Kendrick Kennedy Kimberly Kingston Konstantin Lachlan Lancelot Larissa Laurel
Lavinia Leandro Leonard Leonardo Leonora Leopold Leticia Lillian Lincoln Lorenzo Loretta Lorraine Lucian Luciana
Lucinda Ludwig Luisa Lysander Macy Madeleine Magdalena Magnus Malachi Manuel Marcella Marcello Marguerite Mariana
Marianne Marigold Marilyn Marisol Marjorie Marlon Marvin Matilda Matteo Maximilian Maxine Melanie Melinda Melissa
Mercedes Meredith Micah Millicent Mirabel Mitchell Montgomery Mortimer Muriel Nadine Natalia Natasha Nathaniel Nicolas
Nicolette Nigel Nikolai Noemi Norbert Octavia Odette Olivier Ophelia Orlando Osvaldo Ottilie Pablo Patricia Penelope
Percival Perpetua Petra Philippa Phineas Priscilla Prudence Rafael Raphael Reginald Renata Reuben Ricardo Rodrigo
Roland Rolando Romeo Rosalind Rosalie Rosemary Rowena Rupert Salvador Samantha Santiago Saoirse Savannah Sebastian
Seraphina Sergio Severin Sheldon Sheridan Sigmund Silas Solomon Sophronia Stanislav Stanley Svetlana Tabitha Tamsin
Tatiana Thaddeus Theodora Theodore Thelma Tiberius Timothy Tobiah Tristan Ulrich Ulysses Valentina Valentine Veronica
Vincenzo Virginia Wallace Wilhelmina Winifred Winston Xander Yolanda Yvette Yvonne Zachariah Zebedee Zelda Zenobia
Abbott Ackerman Adair Alcott Aldridge Ambler Anderson Appleton Archambault Armstrong Ashworth Atkinson Bainbridge
Baldwin Ballantyne Bancroft Barclay Barnett Bartlett Beaumont Beckham Bellamy Benson Bertrand Blackwood Blanchard
Bradshaw Brennan Bristow Brockway Buchanan Burgess Caldwell Callahan Calloway Campbell Carmichael Carrington
Castellano Chamberlain Chandra Chatterjee Cheshire Clayton Coleridge Collins Cortez Crawford Cromwell Cunningham
Dalton Davenport Delacroix Dempsey Donnelly Dunham Eastwood Edgerton Ellsworth Fairbanks Fairfax Farnsworth Fitzroy
Fontaine Forsythe Galloway Garrison Gallagher Gillespie Goldberg Granger Grayson Gutierrez Halloran Hamilton
Harrington Hathaway Hawthorne Henderson Hendricks Holloway Huxley Ingram Jefferson Kavanagh Kensington Kingsley
Kowalski Lancaster Langford Lindqvist Livingston Lockhart Macintosh Mackenzie Madison Mancini Marchetti Markham
Matsumoto McAllister Mendoza Merriweather Montague Morrison Nakamura Newcombe Northcott Oakley Okafor Oliveira Osborne
Pemberton Pendleton Petrov Pickering Prescott Quigley Radcliffe Ramirez Ravenscroft Redford Rockwell Rosenberg
Rutherford Saltonstall Sanderson Santoro Schneider Sinclair Sommerville Stanhope Stirling Sutherland Tanaka Templeton
Thackeray Thornton Townsend Trevelyan Underwood Valdez Vanderbilt Waverly Whitaker Whitmore Wilkinson Winchester
Woodward Worthington Yamamoto Yardley Zimmerman
""".split()

COMMON_WORDS = """
able about above accept accident account acid across act action active actor add address admit adult advice afraid
after afternoon again age agent agree ahead air airport alarm album alive allow almost alone along already also always
amount angle angry animal ankle answer ant any apart apple april area argue arm army around arrive arrow art article
artist ask asleep attack attempt aunt autumn avoid awake away baby back bacon bad badge bag bake balance ball balloon
banana band bank bar barn base basket bath battle beach bean bear beard beat beauty because become bed bee beef before
begin behind believe bell belt bench bend berry best better between bicycle big bike bill bird birth biscuit bit bite
bitter black blade blame blank blanket blind block blood blow blue board boat body boil bold bone bonus book boot
border boring born borrow boss both bottle bottom bounce bowl box boy brain branch brave bread break breakfast breath
brick bride bridge brief bright bring broad broken brother brown brush bubble bucket budget build bullet bunch burn
bus bush business busy butter button buy cabin cable cage cake calendar call calm camel camera camp can canal candle
candy cannon canoe canvas cap capital captain car card care carpet carrot carry cart case cash castle cat catch cattle
cause cave ceiling cell cellar cent center century cereal chain chair chalk chance change channel chapter charge
charity chart cheap check cheek cheese chef cherry chess chest chicken chief child chin chip choice choose church
circle city claim class clean clear clerk clever cliff climb clock close cloth cloud clown club coach coal coast coat
code coffee coin cold collar college color comb comedy comfort common company compare complain computer concert
contest cook cookie cool copper copy corn corner correct cost cotton couch cough count country couple courage course
court cousin cover cow crab crack cradle craft crane crash crazy cream credit crew crime crisp cross crowd crown cruel
crumb crush cry cup cupboard curtain curve cushion custom cut cycle dad daily damage dance danger dark date daughter
day dead deaf deal dear death debt decide deck deep deer degree delay deliver demand dentist depth desert design desk
detail diamond diary dinner direct dirt dirty discover dish doctor dog doll dollar donkey door double doubt down dozen
dragon drain drama draw drawer dream dress drink drive drop drum dry duck dust duty eager eagle early earn earth easy
eat edge egg eight elbow elder elephant eleven empty end enemy energy engine enjoy enough enter entry envelope equal
error escape evening event exact exam example excuse exercise exit expert eye face fact factory fail fair fairy faith
fall false family famous fan fancy farm farmer fashion fast fat father fault favor fear feast feather fence festival
fever few field fight figure film final finger finish fire firm fish fist fit five flag flame flash flat flavor flight
float flood floor flour flower fluid fly fog fold follow food foot force forest forget fork form fortune forty forward
fossil fox frame free fresh friend frog front frost fruit fuel full fun funny fur future gallery game garage garden
garlic gas gate gather gear gentle ghost giant gift ginger girl give glad glass glove glue goal goat gold golf good
goose grain grape grass grave gravy great green grid grin grip ground group grow guard guess guest guide guitar gun
habit hair half hall hammer hand handle happy harbor hard harvest hat hate hawk head health heap heart heat heavy
hedge height hello helmet help hero hidden high hill hint history hobby hold hole holiday hollow home honey hook hope
horn horse hospital host hotel hour house human humor hungry hunt hurry husband ice idea ill image inch income index
ink insect inside iron island item ivory jacket jam jar jaw jeans jelly jewel job join joke journey judge juice jump
jungle junior jury just keen keep kettle key kick kid kidney kind king kiss kitchen kite kitten knee knife knock knot
label labor ladder lady lake lamb lamp land lane language large laser late laugh lawn lawyer layer lazy leader leaf
lean learn leather leave left leg legal lemon lend length lesson letter level liberty library lid life lift light lily
limb limit line lion lip liquid list listen little live liver lizard load loaf loan lobster local lock lonely long
loop loose lorry loud love lovely low loyal luck lunch lung machine mad magic magnet maid mail main major make male
mammal man manager mango manner map marble march margin mark market marry mask mass master match material math matter
maximum meadow meal meat medal medicine meet melon member memory mental menu mercy merit mess message metal method
middle midnight mild milk mill mind minor minute mirror miss mist mixture model modern moment money monkey month mood
moon moral morning mother motor mountain mouse mouth move movie mud mug muscle museum music must mutual nail name
narrow nation nature near neat neck needle nephew nerve nest net never new news next nice niece night nine noble noise
noodle normal north nose note notice novel number nurse nut oak object ocean odd offer office often oil old olive
onion only open opera orange orbit order organ other oven owl owner oxygen pack page pain paint pair palace palm pan
panel panic paper parade parcel parent park parrot part party pass past paste path patient pattern pause pay peace
peach peanut pearl pen pencil penny people pepper perfect person pet phone photo piano picnic picture pie piece pig
pigeon pillow pilot pin pink pipe pirate pitch pizza place plain plan plane planet plant plastic plate play pleasant
plenty plum pocket poem poet point poison polite pond pony pool poor popular port position post pot potato pound
powder power praise pray present press pretty price pride priest prince print prison prize problem profit program
proof proper proud public pull pump punch pupil puppet puppy purple purpose push puzzle quality quarter queen question
quick quiet quilt quote rabbit race radio rail rain rainbow raise range rapid rare rat rate raw reach ready real
reason record red relax remote rent repair reply report rescue rest result return reward rhythm rib ribbon rice rich
riddle ride rifle right ring ripe rise risk river road robot rock rocket roll roof room root rope rose rough round
route royal rubber rude rug rule ruler run rural rush sad saddle safe sail salad salary sale salmon salt same sample
sand sauce sausage save scale scarf scene school science scissors score screen screw sea seal season seat second
secret seed sell send sense series servant service seven shade shadow shallow shape share shark sharp sheep sheet
shelf shell shelter shield shift shine ship shirt shock shoe shop shore short shoulder shout show shower shy sick side
sight sign signal silent silk silly silver simple sing single sink sister size skate skill skin skirt sky sleep slice
slide slim slow small smart smell smile smoke snack snake snow soap soccer sock sofa soft soil soldier solid solve son
song soon sorry sound soup sour south space spare speak special speed spell spend spice spider spin spirit spoon sport
spot spring square squirrel stable staff stage stair stamp stand star start state station statue stay steak steam
steel stem step stick still sting stock stomach stone stool stop store storm story stove straight strange straw stream
street strong student study stuff style sugar suit summer sun supper supply sure surface surprise swan sweater sweet
swim swing sword symbol syrup table tail tailor talent talk tall tank tape target task taste tax taxi tea teacher team
tear teeth temple tennis tent term test text thank theater thick thief thin thing thirsty thread throat thumb thunder
ticket tide tidy tiger timber time tiny tip tired tissue title toast today toe toilet tomato tongue tool tooth top
torch total touch tour towel tower town toy track trade traffic train trap travel tray treasure tree trial triangle
trick trip trouble truck true trumpet trunk trust truth try tube tulip tune tunnel turkey turn turtle twelve twenty
twin type ugly umbrella uncle under uniform union unit until upper upset urban usual valley value van vase vast velvet
verb vessel victory video view village violin virus visit voice volume vote wagon waist wait walk wall wallet walnut
want war warm wash wasp waste watch water wave wax way weak wealth weapon weather wedding week weight welcome well
west wet whale wheat wheel whip whisper whistle white whole wide wife wild win wind window wine wing winner winter
wire wise wish witch wizard wolf woman wonder wood wool word work world worm worry wrist write wrong yard yarn year
yellow yogurt young youth zebra zero zone zoo
""".split()
