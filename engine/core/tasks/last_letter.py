"""Last-letter concatenation (Wei et al., 2022), the task of the System 2 distillation paper's RaR experiments."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

from s2d.engine.core.tasks.base import (
    FIRST_NAMES,
    Exemplar,
    Split,
    TaskInput,
    fold_to_ascii,
    generate_distinct,
    make_input_id,
)
from s2d.engine.core.tasks.words import COMMON_WORDS, MORE_NAMES

_QUOTED = re.compile(r"[\"'“”‘’`]([^\"'“”‘’`]+)[\"'“”‘’`]")


@dataclass(frozen=True)
class LastLetterTask:
    """Last-letter concatenation (Wei et al., 2022), as used in the System 2 distillation paper."""

    name: str = "last_letter"
    words_per_question: int = 4
    # Wei et al.'s few-shot chain-of-thought format, on names that the task never draws.
    exemplars: ClassVar[tuple[Exemplar, ...]] = tuple(
        Exemplar(
            f'Take the last letters of the words in "{" ".join(words)}" and concatenate them.',
            " ".join(f'The last letter of "{word}" is "{word[-1]}".' for word in words)
            + f' Concatenating them is "{"".join(w[-1] for w in words)}".\nAnswer: {"".join(w[-1] for w in words)}',
        )
        for words in (("Elon", "Musk", "Gwen", "Nelson"), ("Larry", "Page", "Orla", "Bjorn"))
    )

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


_LETTER_IS = re.compile(r"letter\b[^.\n]*?\bis\s*:?\s*[\"'“‘`]?([a-z])\b", re.IGNORECASE)
_SINGLE_WORD_EXEMPLARS = ("pebble", "orchid", "Nelson", "walrus")


@dataclass(frozen=True)
class LastLetterOneTask:
    """The last letter of one word: a name or a common English word (~2,350, so a few hundred are held out).

    The four-word task is beyond a 135M model with any prompt; one word is the size at which worked examples
    (few-shot chain of thought: spell the word, then read its last letter) beat a direct answer there.
    """

    name: str = "last_letter_one"
    exemplars: ClassVar[tuple[Exemplar, ...]] = tuple(
        Exemplar(
            f'What is the last letter of the word "{word}"?',
            f"{word} is spelled {'-'.join(word)}. The last letter is {word[-1]}.\nAnswer: {word[-1]}",
        )
        for word in _SINGLE_WORD_EXEMPLARS
    )

    def generate(self, num_inputs: int, seed: int, split: Split) -> list[TaskInput]:
        return generate_distinct(self.name, num_inputs, seed, split, self._draw)

    def _draw(self, rng: random.Random) -> tuple[str, str]:
        word = rng.choice(_VOCABULARY)
        return f'What is the last letter of the word "{word}"?', word[-1].lower()

    def normalize(self, raw_answer: str | None) -> str | None:
        """One letter, lower case: a quoted letter, a lone letter ("E."), or "... letter is x"; else None."""
        if raw_answer is None:
            return None
        text = fold_to_ascii(raw_answer)
        quoted = [span for span in _QUOTED.findall(text) if len(span.strip()) == 1]
        if quoted:
            text = quoted[-1]
        letters = re.sub(r"[^a-z]", "", text.lower())
        if len(letters) == 1:
            return letters
        match = _LETTER_IS.findall(text)
        return match[-1].lower() if match else None

    def system1_prompt(self, question: str) -> str:
        return f"{question} Reply with the letter only."


_VOCABULARY = tuple(
    dict.fromkeys(
        word
        for word in (*FIRST_NAMES, *MORE_NAMES, *COMMON_WORDS)
        if word.lower() not in {w.lower() for w in _SINGLE_WORD_EXEMPLARS}
    )
)
