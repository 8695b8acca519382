"""The column path of answer extraction (curation) gives, text by text, what the per-text path gives."""

import random

import pyarrow as pa
import pytest

from s2d.engine.core.answers import extract_final_answer, extract_final_answers
from s2d.engine.core.criteria import extracted_and_answers, extracted_and_answers_array
from s2d.engine.core.methods import Extractor
from s2d.engine.core.tasks import TASKS

# Pieces that reach every branch of extract_final_answer: markers with and without emphasis, "the answer is",
# several "answer"s, a letter before "answer", every line break Python knows, non-ASCII look-alikes (ſ, K: the
# Kelvin sign, which Python's case-insensitive [a-z] matches), blank and formatting-only lines.
PIECES = [
    "answer", "Answer", "ANSWER", "final", "Final answer", "answer is", "The answer is", "answer:", "Answer:",
    "**Answer:**", "**Answer**:", "answer is:", " is ", "is", ":", "：", "**", "*", "_", "`", ".", "!", " ", "  ",
    "\t", "\n", "\n\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\xa0", "x", "42", "yes",
    "No", "abc", "é", "ſ", "K", "answerer", "xanswer:", "Zanswer is", "-", "(", "#", "final  answer :", "answers",
    "is:", "\nAnswer\n", "Answer\n:", "answer\t is \n", "ANſWER:",
]  # fmt: skip
KNOWN = [
    None, "", " ", "\n", "The answer is x.", "Answer: 42", "**Answer:**\nabcd", "Answer: Answer: Answer",
    "Let me think.\nAnswer: abcd", "Answer: wrong\nwait...\nFinal answer: **yxwv**.", 'The answer is "nmop".',
    "just this line\n\n", "   \n ", "x\n**\n.", "answer is isanswer: y", "foo\nanswer is\n\nbar baz!",
]  # fmt: skip


def _texts(seed: int, count: int) -> list[str | None]:
    rng = random.Random(seed)
    return KNOWN + ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_extract_final_answers_is_extract_final_answer_per_text(seed):
    texts = _texts(seed, 20_000)
    assert extract_final_answers(pa.array(texts, pa.string())).to_pylist() == [extract_final_answer(t) for t in texts]


def test_extract_final_answers_of_no_texts():
    assert extract_final_answers(pa.array([], pa.string())).to_pylist() == []
    assert extract_final_answers(pa.array([None, None], pa.string())).to_pylist() == [None, None]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize(
    "extractor", [Extractor(), Extractor(kind="last_line"), Extractor(kind="regex", pattern=r"\b(\w)\b")]
)
def test_extracted_and_answers_array_is_the_per_text_one(task, extractor):
    texts = _texts(7, 2_000) + ["Answer: B", "answer: (b)", "The answer is 3.", "Answer: 3.0", "Answer: yes"] * 5
    spans, answers = extracted_and_answers(TASKS[task], extractor, texts)
    array_spans, array_answers = extracted_and_answers_array(TASKS[task], extractor, pa.array(texts, pa.string()))
    assert array_spans.to_pylist() == spans
    assert array_answers.to_pylist() == answers
