"""pairwise_judge and multiple_choice: structured inputs (fields), labels, normalisers on malformed outputs,
and the BSM / USC step parsers."""

import pytest

from s2d.engine.core.answers import parse_list_items, parse_pair_scores, parse_usc_choice
from s2d.engine.core.tasks import get_task, input_fields_of, make_input_id
from s2d.engine.core.tasks.pairwise_judge import PAIRS
from s2d.engine.core.tasks.sycophancy import FACTS


@pytest.mark.parametrize("name", ["pairwise_judge", "multiple_choice"])
def test_inputs_are_seeded_distinct_and_composed_from_their_fields(name):
    task = get_task(name)
    items = task.generate(12, seed=0, split="train")
    assert items == task.generate(12, seed=0, split="train")
    assert [i.question for i in items] != [i.question for i in task.generate(12, seed=1, split="train")]
    assert len({item.question for item in items}) == 12
    for item in items:
        assert item.input_id == make_input_id(name, item.question)
        assert set(item.fields) == set(input_fields_of(task))
        assert task.compose(item.fields) == item.question


@pytest.mark.parametrize("name", ["pairwise_judge", "multiple_choice"])
def test_eval_questions_are_held_out_from_train(name):
    task = get_task(name)
    stem = "instruction" if name == "pairwise_judge" else "stem"
    train = {item.fields[stem] for item in task.generate(30, 0, "train")}
    held_out = {item.fields[stem] for item in task.generate(12, 0, "eval")}
    assert train and held_out and not train & held_out


def test_pairwise_judge_labels_the_good_response_and_balances_positions():
    task = get_task("pairwise_judge")
    good = {question: good for question, good, _ in PAIRS}
    items = task.generate(36, 0, "train")
    for item in items:
        chosen = item.fields["response_a"] if item.label == "A" else item.fields["response_b"]
        assert chosen == good[item.fields["instruction"]]
    assert sum(item.label == "A" for item in items) == 18  # every question once with the good response on each side
    with pytest.raises(ValueError, match="36 distinct train inputs"):
        task.generate(37, 0, "train")
    assert "Reply with A, B or tie only." in task.system1_prompt(items[0].question)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A", "A"),
        ("B.", "B"),
        ("**B**", "B"),
        ("Response B", "B"),
        ("Assistant A is better", "A"),
        ("(A)", "A"),
        ("A is better than B", "A"),
        ("Response B is better than response A", "B"),
        ("tie", "tie"),
        ("It's a tie", "tie"),
        ("Both are equally good", "tie"),
        ("They are equal", "tie"),
        ("a better one", None),  # a lower-case article is no verdict
        ("I like both", None),
        ("", None),
        (None, None),
        ("none", None),
        ("Ｂ", "B"),  # full-width
    ],
)
def test_pairwise_judge_normalizes_verdicts(raw, expected):
    assert get_task("pairwise_judge").normalize(raw) == expected


def test_multiple_choice_labels_the_true_option():
    task = get_task("multiple_choice")
    answers = {fact.question: fact.answer for fact in FACTS}
    for item in task.generate(40, 0, "train"):
        assert item.fields["options"]["ABCD".index(item.label)] == answers[item.fields["stem"]]
        assert item.question.splitlines()[1].startswith("A) ")
    with pytest.raises(ValueError, match="2 to 4 options"):
        task.compose({"stem": "q", "options": ["only"]})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("B", "B"),
        ("B) Canberra", "B"),
        ("(C)", "C"),
        ("d", None),
        ("Option D", "D"),
        ("the answer is option c", "C"),
        ("I choose C because it is right", "C"),
        ("C. Au", "C"),
        ("A or B", "A"),  # the leading letter
        ("Canberra", None),  # option text without its letter: normalize cannot see the options
        ("E", None),
        ("", None),
        (None, None),
        ("I'm not sure", None),
    ],
)
def test_multiple_choice_normalizes_letters(raw, expected):
    assert get_task("multiple_choice").normalize(raw) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1. Accuracy\n2. Helpfulness\n3. Clarity", ["Accuracy", "Helpfulness", "Clarity"]),
        ("Here is a plan:\n- **Accuracy**: facts\n- Relevance", ["Accuracy: facts", "Relevance"]),
        ("Accuracy\nClarity", ["Accuracy", "Clarity"]),  # no markers: every non-empty line
        ("1) a\n2) b\n3) c\n4) d\n5) e\n6) f", ["a", "b", "c", "d", "e"]),  # capped
        ("1. Accuracy\n2. Cla", ["Accuracy", "Cla"]),  # truncated output keeps its partial item
        ("", []),
        (None, []),
        ("   \n  ", []),
    ],
)
def test_parse_list_items(text, expected):
    assert parse_list_items(text, 5) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Score A: 4, Score B: 2", (4, 2)),
        ("Response A: 3/5\nResponse B: 5/5", (3, 5)),
        ("Assistant A gets 4 out of 5 and Assistant B gets 1 out of 5.", (4, 1)),
        ("A: 2 B: 3. On reflection, Score A: 5, Score B: 1", (5, 1)),  # the last of each
        ("Score A: 4", None),  # B never scored
        ("Score A: 7, Score B: 9", None),  # out of range
        ("A response with a score of 3 and B is 12", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_pair_scores(text, expected):
    assert parse_pair_scores(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The most consistent response is Response 2", 1),
        ("The most consistent response is: response #3.", 2),
        ("I pick Response 1 since ...", 0),
        ("The most consistent response is Response 9", None),  # out of range
        ("The most consistent response is Response 0", None),  # numbering starts at 1
        ("They all agree.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_usc_choice(text, expected):
    assert parse_usc_choice(text, 4) == expected
