"""Pairwise judging: a question with two responses of known quality; which one is better?

The System 2 distillation paper distills Branch-Solve-Merge (Saha et al., 2023) as an LLM judge of
two responses; its data are human preference sets (MT-bench, OASST2). This embedded table keeps the
task offline: every question has one good response (correct, on topic) and one clearly worse response
(wrong, off topic or unhelpful). Each question yields two inputs, the good response as A and as B, so a
judge that always says "A" scores 50%. The label is "A" or "B"; "tie" is a valid answer, never a label.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from s2d.engine.core.tasks.base import Split, TaskInput, fold_to_ascii, make_input_id

# (question, good response, worse response)
PAIRS: tuple[tuple[str, str, str], ...] = (
    (
        "What is the boiling point of water at sea level in Celsius?",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 50 degrees Celsius at sea level.",
    ),
    (
        "How many days are there in a leap year?",
        "A leap year has 366 days.",
        "A leap year has 365 days, like every other year.",
    ),
    ("Give a synonym of 'happy'.", "A synonym of 'happy' is 'joyful'.", "A synonym of 'happy' is 'angry'."),
    ("What is 12 multiplied by 3?", "12 multiplied by 3 is 36.", "12 multiplied by 3 is 15."),
    (
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun.",
        "Neptune is the planet closest to the Sun.",
    ),
    ("Translate 'thank you' into French.", "'Thank you' in French is 'merci'.", "'Thank you' in French is 'hola'."),
    (
        "Suggest a healthy breakfast.",
        "Oatmeal with fresh fruit and a glass of water is a healthy breakfast.",
        "I don't know anything about food.",
    ),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Beijing."),
    (
        "How do I reverse a list in Python?",
        "Use my_list.reverse() to reverse it in place, or my_list[::-1] for a copy.",
        "Python lists cannot be reversed.",
    ),
    ("Name a primary colour.", "Red is a primary colour.", "Purple is the only primary colour."),
    ("What gas do humans need to breathe to live?", "Humans need oxygen to live.", "Humans need helium to live."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs, like an ant."),
    ("Write a polite greeting for an email.", "Dear Ms. Lee, I hope you are well.", "Whatever. Read this."),
    (
        "What is the freezing point of water in Fahrenheit?",
        "Water freezes at 32 degrees Fahrenheit.",
        "Water freezes at 100 degrees Fahrenheit.",
    ),
    ("Who wrote the play Hamlet?", "William Shakespeare wrote Hamlet.", "Hamlet was written by Isaac Newton."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 40.5."),
    (
        "Give one tip for better sleep.",
        "Keep a regular bedtime and avoid screens for an hour before sleeping.",
        "Drink three cups of coffee just before bed.",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest ocean.",
        "The largest ocean is Lake Michigan.",
    ),
    ("How many continents are there?", "There are seven continents.", "There are two continents."),
    ("What do bees make?", "Bees make honey and beeswax.", "Bees make milk."),
    (
        "Which is heavier, a kilogram of iron or a kilogram of feathers?",
        "They weigh the same: each is one kilogram.",
        "The iron is heavier because iron is a metal.",
    ),
    (
        "What is the opposite of 'ancient'?",
        "The opposite of 'ancient' is 'modern'.",
        "The opposite of 'ancient' is 'old'.",
    ),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour.", "There are 100 minutes in an hour."),
    (
        "Recommend a way to save money each month.",
        "Set a monthly budget and move a fixed amount into savings on payday.",
        "Spend everything as soon as you are paid.",
    ),
)

# One question in four is held out, by position, so an evaluated question is never seen in training.
EVAL_EVERY = 4

_LETTER = re.compile(r"(?<![A-Za-z])([AB])(?![A-Za-z])")
_TIE = re.compile(
    r"\b(?:tie|tied|equal(?:ly)?(?:\s+good)?|same|neither|both(?:\s+are)?\s+(?:equal|good))\b", re.IGNORECASE
)
_LEADING_LETTER = re.compile(r"^\W*(?i:response|assistant|answer|option)?\s*\(?([AB])\)?(?![A-Za-z])")


@dataclass(frozen=True)
class PairwiseJudgeTask:
    name: str = "pairwise_judge"
    input_fields: tuple[str, ...] = ("instruction", "response_a", "response_b")

    def pairs(self, split: Split) -> list[tuple[str, str, str]]:
        held_out = split == "eval"
        return [pair for index, pair in enumerate(PAIRS) if (index % EVAL_EVERY == EVAL_EVERY - 1) == held_out]

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        """Each question of the split twice (good response first, then second), in a seeded order."""
        rng = random.Random(f"{self.name}:{split}:{seed}")
        pairs = self.pairs(split)
        items = [(pair, good_first) for pair in pairs for good_first in (True, False)]
        if num_inputs > len(items):
            raise ValueError(f"task {self.name!r} has {len(items)} distinct {split} inputs, asked for {num_inputs}")
        rng.shuffle(items)
        inputs = []
        for (instruction, good, bad), good_first in items[:num_inputs]:
            fields = {
                "instruction": instruction,
                "response_a": good if good_first else bad,
                "response_b": bad if good_first else good,
            }
            question = self.compose(fields)
            inputs.append(TaskInput(make_input_id(self.name, question), question, "A" if good_first else "B", fields))
        return inputs

    def compose(self, fields: dict[str, Any]) -> str:
        return (
            f"Question: {fields['instruction']}\n\nResponse A: {fields['response_a']}\n\n"
            f"Response B: {fields['response_b']}"
        )

    def normalize(self, raw_answer: str | None) -> str | None:
        """ "A", "B" or "tie" from a verdict span ("Response B", "(A) is better", "It's a tie"); else None.

        A span that names one letter gives that letter; one that names both gives the letter it starts
        with ("A is better than B"), else None; with no letter, tie words ("tie", "equal") give "tie".
        Letters count only as capitals, so the article "a" never reads as a verdict.
        """
        if raw_answer is None:
            return None
        text = fold_to_ascii(raw_answer).strip()
        letters = set(_LETTER.findall(text))
        if len(letters) == 1:
            return letters.pop()
        if len(letters) == 2:
            leading = _LEADING_LETTER.match(text)
            return leading.group(1) if leading else None
        return "tie" if _TIE.search(text) else None

    def system1_prompt(self, question: str) -> str:
        return f"{question}\n\nWhich response is better? Reply with A, B or tie only."
