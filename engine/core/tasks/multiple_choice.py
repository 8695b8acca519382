"""Multiple choice: a factual question with four lettered options, one of them true.

Built from the sycophancy task's fact table (the true answer and its three distractors), so the two
tasks share facts and the same held-out facts. Inputs carry their stem and options as fields, which
lets the `shuffle_options` perturbation permute the options and map the chosen letter back.
The label is the letter of the true option.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from s2d.engine.core.tasks.base import Split, TaskInput, fold_to_ascii, make_input_id
from s2d.engine.core.tasks.sycophancy import Fact, facts_of_split

LETTERS = "ABCD"

# "B", "(B)", "B)", "B. Canberra", "Option B", "answer is C": a capital letter A-D standing alone.
_LEADING = re.compile(r"^\W*(?i:option|choice|answer)?\s*\(?([A-D])\)?(?![A-Za-z])")
_NAMED = re.compile(r"(?i:option|choice)\s*\(?([A-Da-d])\b")
_LONE = re.compile(r"(?<![A-Za-z'])([A-D])(?![A-Za-z'])")


def option_letter(index: int) -> str:
    return LETTERS[index]


@dataclass(frozen=True)
class MultipleChoiceTask:
    name: str = "multiple_choice"
    input_fields: tuple[str, ...] = ("stem", "options")

    def facts(self, split: Split) -> list[Fact]:
        return facts_of_split(split)

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        """Every fact of the split once, then again in new option orders, until `num_inputs` distinct inputs."""
        rng = random.Random(f"{self.name}:{split}:{seed}")
        facts = self.facts(split)
        capacity = 24 * len(facts)  # 4! orders per fact
        if num_inputs > capacity:
            raise ValueError(f"task {self.name!r} has {capacity} distinct {split} inputs, asked for {num_inputs}")
        inputs: list[TaskInput] = []
        seen: set[str] = set()
        while len(inputs) < num_inputs:
            for fact in rng.sample(facts, len(facts)):
                options = [fact.answer, *fact.distractors[:3]]
                rng.shuffle(options)
                fields = {"stem": fact.question, "options": options}
                question = self.compose(fields)
                if question in seen:
                    continue
                seen.add(question)
                label = option_letter(options.index(fact.answer))
                inputs.append(TaskInput(make_input_id(self.name, question), question, label, fields))
                if len(inputs) == num_inputs:
                    break
        return inputs

    def compose(self, fields: dict[str, Any]) -> str:
        options = fields["options"]
        if not 2 <= len(options) <= len(LETTERS):
            raise ValueError(f"a multiple-choice question has 2 to {len(LETTERS)} options, got {len(options)}")
        lines = [f"{option_letter(index)}) {option}" for index, option in enumerate(options)]
        return "\n".join([fields["stem"], *lines])

    def normalize(self, raw_answer: str | None) -> str | None:
        """The chosen letter A-D: leading ("B) Canberra"), named ("option C"), or the only lone capital A-D.

        None otherwise, including for an option's text without its letter: normalize sees no options.
        """
        if raw_answer is None:
            return None
        text = fold_to_ascii(raw_answer).strip()
        for pattern in (_LEADING, _NAMED):
            if match := pattern.search(text):
                return match.group(1).upper()
        lone = set(_LONE.findall(text))
        return lone.pop() if len(lone) == 1 else None

    def system1_prompt(self, question: str) -> str:
        return f"{question}\nReply with the letter of the correct option only."
