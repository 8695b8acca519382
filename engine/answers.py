"""Final-answer extraction: find the answer span in a model's free text, before task-specific normalisation."""

from __future__ import annotations

import re

# "Answer: x", "Final answer: x", "**Answer:** x" - the last one wins, since models restate the question first.
_MARKED = re.compile(r"(?:final\s+)?answer\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*(?P<answer>[^\n]+)", re.IGNORECASE)
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(?P<answer>[^\n]+)", re.IGNORECASE)


def extract_final_answer(text: str | None) -> str | None:
    """The answer span of a completion, or None when the completion is empty.

    Order: the last "Answer: ..." line, then the last "the answer is ...", then the last non-empty line.
    """
    if not text or not text.strip():
        return None
    for pattern in (_MARKED, _ANSWER_IS):
        matches = list(pattern.finditer(text))
        if matches:
            span = matches[-1].group("answer")
            return _clean(span) or None
    lines = [line for line in text.splitlines() if line.strip()]
    return _clean(lines[-1]) or None


def _clean(span: str) -> str:
    # Markdown emphasis and a closing full stop are formatting, not part of the answer.
    return span.strip(" \t*_`").rstrip(".").strip(" \t*_`")
