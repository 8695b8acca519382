"""Free-form answers for the user's own data: no generator, a light normalisation so votes compare like with like."""

from __future__ import annotations

import re
from dataclasses import dataclass

from s2d.engine.core.tasks.base import Split, TaskInput, fold_to_ascii

_EDGE_PUNCTUATION = re.compile(r"^[\s\"'“”‘’`*(\[]+|[\s\"'“”‘’`*)\].,;:!?]+$")


@dataclass(frozen=True)
class FreeformTask:
    """Inputs come from `data.path`; answers are compared after case, accent, quote and whitespace folding."""

    name: str = "freeform"

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        raise ValueError("task freeform has no built-in inputs: set data.path to your file (and data.columns)")

    def normalize(self, raw_answer: str | None) -> str | None:
        if raw_answer is None:
            return None
        text = " ".join(fold_to_ascii(raw_answer).casefold().split())
        text = _EDGE_PUNCTUATION.sub("", text)
        return text or None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with the answer only."
