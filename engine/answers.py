"""Final-answer extraction: find the answer span in a model's free text, before task-specific normalisation."""

from __future__ import annotations

import re

# "Answer: x", "Final answer: x", "**Answer:** x", "**Answer**: x", "Answer：x".
_MARKER = re.compile(r"(?<![a-z])(?:final\s+)?answer\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?", re.IGNORECASE)
# What is left of a span that only repeats the marker word, e.g. the tail of a truncated "Answer: Answer: Answer".
_MARKER_WORDS_ONLY = re.compile(r"(?:\W*(?:final\s+)?answer)+\W*", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"[\s*_`.!]+$")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(?P<answer>[^\n]+)", re.IGNORECASE)


def extract_final_answer(text: str | None) -> str | None:
    """The answer span of a completion, or None when it holds none.

    Order: the last "Answer: ..." with something after it (on its line, or on the next line when the
    marker ends its line), then the last "the answer is ...", then - only when there is no marker at all -
    the last non-empty line. A span made only of markers ("Answer: Answer: Answer:") is skipped, never
    returned as the answer.
    """
    if not text or not text.strip():
        return None
    markers = list(_MARKER.finditer(text))
    for marker in reversed(markers):
        if span := _span_after(text, marker.end()):
            return span
    answer_is = list(_ANSWER_IS.finditer(text))
    if answer_is and (span := _content(answer_is[-1].group("answer"))):
        return span
    if markers:
        return None  # the model marked its answer and left it empty (often a truncated output): no guessing
    for line in reversed(text.splitlines()):
        if span := _content(line):
            return span
    return None


def _span_after(text: str, start: int) -> str | None:
    line_end = text.find("\n", start)
    rest = text[start:] if line_end < 0 else text[start:line_end]
    if span := _content(rest):
        return span
    if _MARKER.search(rest) or line_end < 0:
        return None  # only further markers follow on this line: they take the next line, if anything does
    # "**Answer:**\nabcd": the answer sits on the next non-empty line, unless that line is itself marked.
    following = next((line for line in text[line_end + 1:].splitlines() if line.strip()), "")
    return None if _MARKER.search(following) else _content(following)


def _content(span: str) -> str | None:
    """The span without markers and formatting, or None when nothing else is left."""
    cleaned = _clean(_MARKER.sub(" ", span))
    return None if not cleaned or _MARKER_WORDS_ONLY.fullmatch(cleaned) else cleaned


def _clean(span: str) -> str:
    # Markdown emphasis and closing sentence punctuation are formatting, not part of the answer ("**Yes**!").
    return _TRAILING_FORMAT.sub("", span.lstrip(" \t*_`"))
