"""What every task shares: the input record, the Task protocol, deterministic ids, and seeded generation.

A task owns three things: how its inputs are generated, how a raw model answer is normalised so
that votes compare like with like, and the direct (System 1) prompt that the distilled model learns.
Ground truth (`label`) is kept for evaluation only; curation never reads it.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class TaskInput:
    input_id: str
    question: str
    label: str | None  # ground truth; never used for curation, only for evaluation
    # Structured parts of the question for tasks that have them (pairwise_judge: instruction, response_a,
    # response_b; multiple_choice: stem, options). Methods' templates see them by name, and perturbations
    # rewrite them and re-compose the question with the task's `compose`. JSON-serialisable values only.
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exemplar:
    """A worked example for few-shot prompting: a question and a solution that ends in "Answer: <answer>"."""

    question: str
    solution: str


class Task(Protocol):
    name: str

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]: ...

    def normalize(self, raw_answer: str | None) -> str | None: ...

    def system1_prompt(self, question: str) -> str: ...


class StructuredTask(Task, Protocol):
    """A task whose inputs carry `fields`; `question == compose(fields)` for every input it generates."""

    input_fields: tuple[str, ...]

    def compose(self, fields: dict[str, Any]) -> str: ...


def input_fields_of(task: Task) -> tuple[str, ...]:
    """The structured fields a task's inputs carry (none for plain question tasks)."""
    return tuple(getattr(task, "input_fields", ()))


def task_variables(task: Task) -> dict[str, Any]:
    """Variables a task offers every method template beyond the input: `exemplars` (few-shot worked examples,
    a list of {question, solution}) for tasks that define them. A method that reads one of a task without it
    is refused when the job is loaded."""
    exemplars = getattr(task, "exemplars", ())
    return {"exemplars": [{"question": e.question, "solution": e.solution} for e in exemplars]} if exemplars else {}


def make_input_id(task: str, question: str) -> str:
    """Deterministic id: the same question of the same task gets the same id on every run and machine."""
    return hashlib.sha256(f"{task}\x00{question}".encode()).hexdigest()[:20]


def fold_to_ascii(text: str) -> str:
    """Compatibility-fold and drop accents, so "ＹＥＳ" reads "YES" and "Brasília" reads "Brasilia"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def split_of(task: str, question: str, eval_share: int = 5) -> Split:
    """The split a question belongs to, as a function of its id: one question in `eval_share` is held out.

    Partitioning the question space (rather than excluding the first k train questions from eval) keeps
    the splits disjoint for any seeds and any num_inputs on either side.
    """
    return "eval" if int(make_input_id(task, question), 16) % eval_share == 0 else "train"


def generate_distinct(
    task: str, num_inputs: int, seed: int, split: Split, draw: Callable[[random.Random], tuple[str, str]]
) -> list[TaskInput]:
    """`num_inputs` distinct inputs of `split`, drawn by `draw(rng) -> (question, label)` from a seeded stream.

    Questions of the other split are skipped (see `split_of`). A space too small for `num_inputs` raises
    instead of looping forever.
    """
    rng = random.Random(f"{task}:{split}:{seed}")
    seen: set[str] = set()
    inputs: list[TaskInput] = []
    misses, max_misses = 0, 1000 + 50 * num_inputs
    while len(inputs) < num_inputs:
        question, label = draw(rng)
        if question in seen or split_of(task, question) != split:
            misses += 1
            if misses > max_misses:
                raise ValueError(
                    f"task {task!r} could only generate {len(inputs)} distinct {split} inputs of {num_inputs}"
                )
            continue
        seen.add(question)
        inputs.append(TaskInput(make_input_id(task, question), question, label))
    return inputs


# A fixed list so that generated questions do not depend on any installed data.
FIRST_NAMES = """
Aaliyah Aaron Abigail Adam Adrian Aiden Alan Albert Alexa Alice Alicia Allison Alma Amber Amelia Amir Amos Andre
Angela Anita Ann Anthony April Ariel Arlo Arthur Asher Aubrey Audrey Austin Ava Barbara Beatrice Benjamin Bernard Beth
Bianca Blake Bonnie Brandon Brenda Brian Brooke Bruce Bryan Caleb Camila Carl Carmen Carol Caroline Carter Cecilia
Cedric Celia Chad Charles Chloe Christian Claire Clara Cody Colin Connor Cora Craig Cynthia Daisy Dale Damian Daniel
Daphne David Dean Delia Dennis Derek Diana Diego Dolores Dominic Donald Dora Dorothy Dylan Edgar Edith Edward Eileen
Elena Eli Elijah Eliza Ella Ellen Elliot Elsa Emil Emily Emma Eric Erin Esther Ethan Eva Evelyn Ezra Faith Felix Fern
Fiona Floyd Frances Frank Freya Gabriel Gail George Gerald Gideon Gina Glen Gloria Grace Grant Greta Gus Hailey Hana
Harold Harper Harvey Hazel Heath Helen Henry Hilda Hugo Ian Ida Irene Iris Isaac Isabel Ivan Jack Jacob Jade James
Jane Jared Jasmine Jason Jean Jenna Jerome Jesse Joan Joel John Jonah Jordan Joseph Joy Judith Julia Julian June Kai
Karen Karl Kate Kathy Keith Kelly Kevin Kira Kyle Lana Laura Leah Leo Leon Lewis Liam Lila Lily Linda Lionel Lisa
Logan Lola Louis Lucas Lucy Luke Luna Lydia Mabel Madison Malcolm Marcus Margaret Maria Mark Martha Martin Mason Maya
Megan Melvin Mia Michael Miles Milo Miriam Molly Morgan Nadia Naomi Nathan Neil Nina Noah Nora Oliver Olivia Omar
Oscar Owen Paige Pamela Patrick Paul Pearl Peter Philip Phoebe Piper Quentin Quinn Rachel Ralph Ramona Ray Rebecca
Reed Rex Rhea Richard Riley Rita Robert Robin Roger Rosa Ross Ruby Russell Ruth Ryan Sabrina Sadie Sam Samuel Sara
Scott Sean Selena Seth Sharon Shirley Sienna Simon Sofia Stella Stephen Susan Sylvia Tara Ted Teresa Theo Thomas Tina
Tobias Todd Tracy Trevor Uma Ursula Valerie Vance Vera Victor Viola Violet Vivian Wade Walter Wanda Wendy Wesley Willa
William Wyatt Xavier Yara Yusuf Zachary Zara Zoe
""".split()
