"""Last-letter concatenation (Wei et al., 2022), the task of the System 2 distillation paper's RaR experiments."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from engine.tasks.base import FIRST_NAMES, Split, TaskInput, fold_to_ascii, make_input_id

_QUOTED = re.compile(r"[\"'“”‘’`]([^\"'“”‘’`]+)[\"'“”‘’`]")


@dataclass(frozen=True)
class LastLetterTask:
    """Last-letter concatenation (Wei et al., 2022), as used in the System 2 distillation paper."""

    name: str = "last_letter"
    words_per_question: int = 4

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        """`num_inputs` distinct questions; the eval split never repeats a train question of the same seed.

        Kept as first shipped, so existing runs keep their input ids; newer tasks use `generate_distinct`.
        """
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
        # Full-width and accented letters count as their ASCII letter rather than vanishing.
        letters = re.sub(r"[^a-z]", "", fold_to_ascii(text).lower())
        # Anything much longer than a few letters is prose, not an answer to this task.
        return letters if 0 < len(letters) <= 3 * self.words_per_question else None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with the answer only."
