"""Final-answer extraction: find the answer span in a model's free text, before task-specific normalisation."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

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
    following = next((line for line in text[line_end + 1 :].splitlines() if line.strip()), "")
    return None if _MARKER.search(following) else _content(following)


def _content(span: str) -> str | None:
    """The span without markers and formatting, or None when nothing else is left."""
    cleaned = _clean(_MARKER.sub(" ", span))
    return None if not cleaned or _MARKER_WORDS_ONLY.fullmatch(cleaned) else cleaned


def _clean(span: str) -> str:
    # Markdown emphasis and closing sentence punctuation are formatting, not part of the answer ("**Yes**!").
    return _TRAILING_FORMAT.sub("", span.lstrip(" \t*_`"))


# --- The same extraction for a whole column of texts (curation): array operations, Python only for the rare shapes ---
#
# RE2 (pyarrow.compute) has no look-behind and its \s differs from Python's outside ASCII, so the array path takes
# only texts where the two provably agree: ASCII, no control characters but tab and newline (there \s is space,
# tab and newline in both, and the only line break is \n), and at most one "answer" in any case. Of those:
#   no "answer"        -> the last line with content (what the last-line fallback returns when there is no marker)
#   one marker         -> the rest of its line, when it has content
#   one "answer is"    -> the rest of its line, when it has content, and no marker
# Every other text (and any of these whose span is empty) goes through extract_final_answer, one by one.
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f]"
_FORMAT_CHARS = " \t*_`.!"  # _TRAILING_FORMAT's set in such texts; _clean's left set is its first five
_RE2_LAST_CONTENT_LINE = r"(?:\A|\n)(?P<span>[^\n]*[^\n \t*_`.!][^\n]*)(?:\n[ \t*_`.!]*)*\z"
_RE2_MARKER_REST = r"(?i)(?:\A|[^a-z])answer\s*(?:\*\*)?\s*:\s*(?:\*\*)?(?P<span>[^\n]*)"
_RE2_ANSWER_IS_REST = r"(?i)answer\s+is\s*:?\s*(?P<span>[^\n]*)"


def extract_final_answers(texts: pa.Array) -> pa.Array:
    """`extract_final_answer` of every text of a string array (null: none), the same result for each."""
    texts = pc.cast(texts, pa.string())
    if len(texts) == 0:
        return texts
    simple = pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring_regex(texts, _CONTROL)))
    words = pc.count_substring(texts, "answer", ignore_case=True)
    marker = pc.struct_field(pc.extract_regex(texts, _RE2_MARKER_REST), [0])  # null: no marker
    answer_is = _cleaned(pc.struct_field(pc.extract_regex(texts, _RE2_ANSWER_IS_REST), [0]))
    last_line = _cleaned(pc.struct_field(pc.extract_regex(texts, _RE2_LAST_CONTENT_LINE), [0]))
    spans = pc.case_when(
        pc.make_struct(pc.equal(words, 0), pc.equal(words, 1)),
        last_line,  # null: a blank text, or no line with content, as in Python
        pc.if_else(pc.is_valid(marker), _cleaned(marker), answer_is),
    )
    # Python: not such a text, more than one "answer", or one whose span is empty (the next line, the last line...)
    found_in_python = pc.or_(
        pc.invert(simple), pc.or_(pc.greater(words, 1), pc.and_(pc.equal(words, 1), pc.is_null(spans)))
    )
    found_in_python = pc.fill_null(pc.and_(found_in_python, pc.is_valid(texts)), False)
    if not pc.any(found_in_python).as_py():
        return spans
    rest = [extract_final_answer(text) for text in pc.filter(texts, found_in_python).to_pylist()]
    return pc.replace_with_mask(spans, found_in_python, pa.array(rest, pa.string()))


def _cleaned(spans: pa.Array) -> pa.Array:
    """`_clean` of each span (in the texts above), null when nothing is left."""
    cleaned = pc.utf8_rtrim(pc.utf8_ltrim(spans, characters=_FORMAT_CHARS[:5]), characters=_FORMAT_CHARS)
    return pc.if_else(pc.equal(cleaned, ""), pa.scalar(None, pa.string()), cleaned)


# --- Parsers of intermediate method steps (Branch-Solve-Merge) and of the USC judge's choice ---

_LIST_MARKER = re.compile(
    r"^\s*(?:[-*•]|\(?\d{1,2}[.):]|\(?[a-e][.)]|(?:criterion|factor)\s*\d*\s*[:.-])\s*", re.IGNORECASE
)
_OUT_OF_FIVE = re.compile(r"\s*(?:/|out\s+of)\s*5\b", re.IGNORECASE)


def parse_list_items(text: str | None, max_items: int) -> list[str]:
    """The items of a (possibly truncated) list: lines with a list marker ("1.", "-", "(a)"), else non-empty lines.

    Markdown emphasis is dropped and at most `max_items` are kept, in order; an empty text has no items.
    """
    if not text:
        return []
    lines = [line for line in text.splitlines() if line.strip()]
    marked = [line for line in lines if _LIST_MARKER.match(line)]
    items = [_clean(_LIST_MARKER.sub("", line, count=1).replace("**", "")).strip(" _:") for line in (marked or lines)]
    return [item for item in items if item][:max_items]


def _last_score(text: str, label: str) -> int | None:
    # The label as a standalone capital letter ("A", "Response A", "Assistant A's"), then a 1-5 score on its line.
    pattern = re.compile(rf"(?<![A-Za-z]){label}(?![A-Za-z])[^0-9\n]{{0,30}}?(?<!\d)([1-5])(?!\d)")
    matches = pattern.findall(text)
    return int(matches[-1]) if matches else None


def parse_pair_scores(text: str | None) -> tuple[int, int] | None:
    """Scores 1-5 of responses A and B from a judge's text ("Score A: 4/5, Score B: 2"); the last of each wins.

    None unless both scores are found: a criterion that scored one side only cannot be compared.
    """
    if not text:
        return None
    text = _OUT_OF_FIVE.sub("", text)  # "4 out of 5" must not read as a score of 5
    score_a, score_b = _last_score(text, "A"), _last_score(text, "B")
    return None if score_a is None or score_b is None else (score_a, score_b)


_USC_CHOICE = re.compile(r"most\s+consistent\s+response\s+is\s*:?\s*(?:response\s*)?#?\s*(\d+)", re.IGNORECASE)
_RESPONSE_NUMBER = re.compile(r"\bresponse\s*#?\s*(\d+)", re.IGNORECASE)


def parse_usc_choice(text: str | None, num_responses: int) -> int | None:
    """0-based index of the response a USC judge picked ("The most consistent response is Response 3" -> 2).

    Responses are numbered from 1 in the prompt. The phrase asked for wins; failing that, the first
    "Response k" mentioned. None when neither names a response that exists.
    """
    if not text:
        return None
    match = _USC_CHOICE.search(text) or _RESPONSE_NUMBER.search(text)
    if not match:
        return None
    index = int(match.group(1)) - 1
    return index if 0 <= index < num_responses else None
