"""Arithmetic word problems: small GSM8k-like stories of 2-3 operations on whole numbers.

The System 2 distillation paper reports that Chain-of-Thought on GSM8k does *not* distill well into
System 1; this task lets that negative result be reproduced offline at toy scale.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from s2d.engine.core.tasks.base import FIRST_NAMES, Exemplar, Split, TaskInput, generate_distinct

ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells", "cards", "coins")

# Each template draws its numbers, keeps every intermediate count non-negative, and returns (text, result).
# The text repeats the person's name rather than a pronoun, since the names carry no gender.
Template = Callable[[random.Random, str, str, str], tuple[str, int]]


def _buy_then_give(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, 40), rng.randint(2, 30)
    c = rng.randint(1, a + b)
    return (
        f"{name} has {a} {item}. {name} buys {b} more and gives {c} to {other}. How many {item} does {name} have now?",
        a + b - c,
    )


def _give_then_find(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a = rng.randint(5, 50)
    b, c = rng.randint(1, a), rng.randint(2, 30)
    return (
        f"{name} has {a} {item}. {name} gives {b} to {other} and then finds {c} more. "
        f"How many {item} does {name} have now?",
        a - b + c,
    )


def _boxes_minus(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    c = rng.randint(1, a * b)
    return (
        f"{name} has {a} boxes with {b} {item} in each box. {name} gives {c} {item} to {other}. "
        f"How many {item} does {name} have left?",
        a * b - c,
    )


def _daily_then_share(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, 12), rng.randint(2, 9)
    c = rng.choice([d for d in range(2, 10) if (a * b) % d == 0])  # an exact share; b itself always qualifies
    return (
        f"{name} collects {a} {item} every day for {b} days and then shares them equally among "
        f"{c} friends. How many {item} does each friend get?",
        a * b // c,
    )


def _three_steps(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a, b = rng.randint(2, 40), rng.randint(2, 30)
    c = rng.randint(1, a + b)
    d = rng.randint(2, 20)
    return (
        f"{name} has {a} {item}. {name} buys {b} more, gives {c} to {other}, and then buys {d} more. "
        f"How many {item} does {name} have now?",
        a + b - c + d,
    )


def _packs_plus_minus(rng: random.Random, name: str, other: str, item: str) -> tuple[str, int]:
    a, b, c = rng.randint(2, 8), rng.randint(2, 10), rng.randint(1, 15)
    d = rng.randint(1, a * b + c)
    return (
        f"{name} buys {a} packs of {item} with {b} {item} in each pack and already has {c} {item}. "
        f"{name} gives {d} {item} to {other}. How many {item} does {name} have now?",
        a * b + c - d,
    )


TEMPLATES: tuple[Template, ...] = (
    _buy_then_give,
    _give_then_find,
    _boxes_minus,
    _daily_then_share,
    _three_steps,
    _packs_plus_minus,
)

# An optional sign (not a hyphen inside a word or range), digits with optional thousands commas, optional decimals.
_NUMBER = re.compile(r"(?<![\w-])-?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?")
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+")


@dataclass(frozen=True)
class ArithmeticTask:
    name: str = "arithmetic"
    # Worked solutions in the style of GSM8k's, one equation per operation, on names the task never draws.
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        Exemplar(
            "Tomas has 12 marbles. Tomas buys 7 more and gives 5 to Ines. How many marbles does Tomas have now?",
            "Tomas starts with 12 marbles. After buying 7 more, Tomas has 12 + 7 = 19. After giving 5 away, "
            "Tomas has 19 - 5 = 14.\nAnswer: 14",
        ),
        Exemplar(
            "Ines has 3 boxes with 6 shells in each box. Ines gives 5 shells to Tomas. How many shells does "
            "Ines have left?",
            "3 boxes with 6 shells each is 3 * 6 = 18 shells. After giving 5 away, Ines has 18 - 5 = 13.\nAnswer: 13",
        ),
        Exemplar(
            "Tomas collects 4 stamps every day for 6 days and then shares them equally among 3 friends. How "
            "many stamps does each friend get?",
            "Tomas collects 4 * 6 = 24 stamps. Shared equally among 3 friends, each friend gets 24 / 3 = 8.\nAnswer: 8",
        ),
    )

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        return generate_distinct(self.name, num_inputs, seed, split, self._draw)

    def _draw(self, rng: random.Random) -> tuple[str, str]:
        template = rng.choice(TEMPLATES)
        name, other = rng.sample(FIRST_NAMES, 2)
        question, result = template(rng, name, other, rng.choice(ITEMS))
        return question, str(result)

    def normalize(self, raw_answer: str | None) -> str | None:
        """The last integer in the span, as plain digits ("1,234" -> "1234", "−3" -> "-3", "12.0" -> "12").

        None when there is no number, or when the last number is not whole ("12.5"): every label is an
        integer, so such a sample cannot be right and should not count as a vote for anything.
        """
        if raw_answer is None:
            return None
        text = raw_answer.replace("\u2212", "-")  # the Unicode minus sign
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        whole, _, fraction = numbers[-1].rstrip(",").partition(".")
        if "," in whole:
            # "1,234" is one number; "3,4" is a list whose last number is 4.
            whole = whole.replace(",", "") if _GROUPED.fullmatch(whole) else whole.rsplit(",", 1)[1]
        if fraction.strip("0"):
            return None
        try:
            return str(int(whole))
        except ValueError:  # a lone "-" left over from "3,-" and the like
            return None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with the number only."
