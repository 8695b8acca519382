"""Coin flip (Wei et al., 2022): track a coin's state through a few people who flip it or not.

The System 2 distillation paper distills Rephrase-and-Respond on it: "flip" is ambiguous to a model
(toss or turn over?), and rephrasing resolves that before answering.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

from s2d.engine.core.tasks.base import FIRST_NAMES, Exemplar, Split, TaskInput, fold_to_ascii, generate_distinct

_YES_OR_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CoinFlipTask:
    name: str = "coin_flip"
    min_people: int = 2
    max_people: int = 4
    # Wei et al.'s few-shot chain-of-thought format, on names that the task never draws.
    exemplars: ClassVar[tuple[Exemplar, ...]] = (
        Exemplar(
            "A coin is heads up. Ka flips the coin. Sherrie flips the coin. Is the coin still heads up?",
            "The coin was flipped by Ka and Sherrie. So the coin was flipped 2 times, which is an even number. "
            "The coin started heads up, so after an even number of flips, it is still heads up.\nAnswer: yes",
        ),
        Exemplar(
            "A coin is heads up. Jamey flips the coin. Inga does not flip the coin. Millicent does not flip the "
            "coin. Is the coin still heads up?",
            "The coin was flipped by Jamey. So the coin was flipped 1 time, which is an odd number. The coin "
            "started heads up, so after an odd number of flips, it is tails up.\nAnswer: no",
        ),
        Exemplar(
            "A coin is heads up. Maybelle does not flip the coin. Elanor does not flip the coin. Is the coin "
            "still heads up?",
            "Nobody flipped the coin. So the coin was flipped 0 times, which is an even number. The coin started "
            "heads up, so it is still heads up.\nAnswer: yes",
        ),
    )

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        return generate_distinct(self.name, num_inputs, seed, split, self._draw)

    def _draw(self, rng: random.Random) -> tuple[str, str]:
        people = rng.sample(FIRST_NAMES, rng.randint(self.min_people, self.max_people))
        flips = [rng.random() < 0.5 for _ in people]
        actions = " ".join(
            f"{person} flips the coin." if flipped else f"{person} does not flip the coin."
            for person, flipped in zip(people, flips)
        )
        question = f"A coin is heads up. {actions} Is the coin still heads up?"
        # An even number of flips brings the coin back to heads.
        return question, "yes" if sum(flips) % 2 == 0 else "no"

    def normalize(self, raw_answer: str | None) -> str | None:
        """The first standalone "yes" or "no" in the span, lower case; None when there is neither.

        Deliberately simple: "No, it is not" -> "no", but "The coin is still heads up" -> None (no yes/no
        word), and a "no" in prose before the verdict wins ("There is no flip, so yes" -> "no").
        """
        if raw_answer is None:
            return None
        match = _YES_OR_NO.search(fold_to_ascii(raw_answer))
        return match.group(1).lower() if match else None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with yes or no only."
