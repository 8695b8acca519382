"""Built-in synthetic tasks: seeded input generators with ground truth kept for evaluation only.

A task owns three things: how its inputs are generated, how a raw model answer is normalised so
that votes compare like with like, and the direct (System 1) prompt that the distilled model learns.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal, Protocol

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class TaskInput:
    input_id: str
    question: str
    label: str | None  # ground truth; never used for curation, only for evaluation


class Task(Protocol):
    name: str

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]: ...

    def normalize(self, raw_answer: str | None) -> str | None: ...

    def system1_prompt(self, question: str) -> str: ...


def make_input_id(task: str, question: str) -> str:
    """Deterministic id: the same question of the same task gets the same id on every run and machine."""
    return hashlib.sha256(f"{task}\x00{question}".encode()).hexdigest()[:20]


# A fixed list so that generated questions do not depend on any installed data.
FIRST_NAMES = """
Aaliyah Aaron Abigail Adam Adrian Aiden Alan Albert Alexa Alice Alicia Allison Alma Amber Amelia Amir Amos Andre Angela
Anita Ann Anthony April Ariel Arlo Arthur Asher Aubrey Audrey Austin Ava Barbara Beatrice Benjamin Bernard Beth Bianca
Blake Bonnie Brandon Brenda Brian Brooke Bruce Bryan Caleb Camila Carl Carmen Carol Caroline Carter Cecilia Cedric Celia
Chad Charles Chloe Christian Claire Clara Cody Colin Connor Cora Craig Cynthia Daisy Dale Damian Daniel Daphne David Dean
Delia Dennis Derek Diana Diego Dolores Dominic Donald Dora Dorothy Dylan Edgar Edith Edward Eileen Elena Eli Elijah Eliza
Ella Ellen Elliot Elsa Emil Emily Emma Eric Erin Esther Ethan Eva Evelyn Ezra Faith Felix Fern Fiona Floyd Frances Frank
Freya Gabriel Gail George Gerald Gideon Gina Glen Gloria Grace Grant Greta Gus Hailey Hana Harold Harper Harvey Hazel
Heath Helen Henry Hilda Hugo Ian Ida Irene Iris Isaac Isabel Ivan Jack Jacob Jade James Jane Jared Jasmine Jason Jean
Jenna Jerome Jesse Joan Joel John Jonah Jordan Joseph Joy Judith Julia Julian June Kai Karen Karl Kate Kathy Keith Kelly
Kevin Kira Kyle Lana Laura Leah Leo Leon Lewis Liam Lila Lily Linda Lionel Lisa Logan Lola Louis Lucas Lucy Luke Luna
Lydia Mabel Madison Malcolm Marcus Margaret Maria Mark Martha Martin Mason Maya Megan Melvin Mia Michael Miles Milo Miriam
Molly Morgan Nadia Naomi Nathan Neil Nina Noah Nora Oliver Olivia Omar Oscar Owen Paige Pamela Patrick Paul Pearl Peter
Philip Phoebe Piper Quentin Quinn Rachel Ralph Ramona Ray Rebecca Reed Rex Rhea Richard Riley Rita Robert Robin Roger Rosa
Ross Ruby Russell Ruth Ryan Sabrina Sadie Sam Samuel Sara Scott Sean Selena Seth Sharon Shirley Sienna Simon Sofia Stella
Stephen Susan Sylvia Tara Ted Teresa Theo Thomas Tina Tobias Todd Tracy Trevor Uma Ursula Valerie Vance Vera Victor Viola
Violet Vivian Wade Walter Wanda Wendy Wesley Willa William Wyatt Xavier Yara Yusuf Zachary Zara Zoe
""".split()

_QUOTED = re.compile(r"[\"'“”‘’`]([^\"'“”‘’`]+)[\"'“”‘’`]")


@dataclass(frozen=True)
class LastLetterTask:
    """Last-letter concatenation (Wei et al., 2022), as used in the System 2 distillation paper."""

    name: str = "last_letter"
    words_per_question: int = 4

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        """`num_inputs` distinct questions; the eval split never repeats a train question of the same seed."""
        excluded = set() if split == "train" else {item.question for item in self._stream(seed, "train", num_inputs)}
        return self._stream(seed, split, num_inputs, excluded)

    def _stream(self, seed: int, split: Split, count: int, excluded: set[str] = frozenset()) -> list[TaskInput]:
        rng = random.Random(f"{self.name}:{split}:{seed}")
        seen: set[str] = set()
        inputs: list[TaskInput] = []
        while len(inputs) < count:
            words = rng.sample(FIRST_NAMES, self.words_per_question)
            question = f'Take the last letters of the words in "{" ".join(words)}" and concatenate them.'
            if question in seen or question in excluded:
                continue
            seen.add(question)
            label = "".join(word[-1] for word in words).lower()
            inputs.append(TaskInput(make_input_id(self.name, question), question, label))
        return inputs

    def normalize(self, raw_answer: str | None) -> str | None:
        """Letters only, lower case; a quoted span wins over surrounding prose ('The result is "abcd".')."""
        if raw_answer is None:
            return None
        quoted = _QUOTED.findall(raw_answer)
        text = quoted[-1] if quoted else raw_answer
        letters = re.sub(r"[^a-z]", "", text.lower())
        # Anything much longer than a few letters is prose, not an answer to this task.
        return letters if 0 < len(letters) <= 3 * self.words_per_question else None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with the answer only."


TASKS: dict[str, Task] = {task.name: task for task in (LastLetterTask(),)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None
