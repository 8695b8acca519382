"""A catalogue of bad input rows, each with the quarantine reason s2d must give it, plus good rows.

Shared by the unit test of the validator and the integration test that runs a real job over them.
"""

from __future__ import annotations

import json
from pathlib import Path

GOOD = [
    {"q": "What is the capital of France?", "a": "Paris"},
    {"q": "What is 2 + 3?", "a": 5},
    {"q": "Name the largest planet of the solar system.", "a": "Jupiter"},
    # Not bad: template syntax in an input is text, rendered as a value and never parsed as a template.
    {"q": "What does {{ 7 * 7 }} print in Jinja? {% raw %} {# comment #}", "a": "49"},
    # Not bad: non-Latin text and emoji within the context.
    {"q": "Traduisez « chat » en anglais 🐱, s'il vous plaît.", "a": "cat"},
]

# (json line as bytes or a JSON value, expected reason). Each is a different way for a row to be bad.
BAD = [
    ({"q": "", "a": "x"}, "empty"),
    ({"q": "   \t\n ", "a": "x"}, "whitespace_only"),
    ({"q": None, "a": "x"}, "null"),
    ({"q": 42, "a": "x"}, "not_a_string"),
    ({"q": 3.5, "a": "x"}, "not_a_string"),
    ({"q": True, "a": "x"}, "not_a_string"),
    ({"q": {"nested": "object"}, "a": "x"}, "not_a_string"),
    ({"q": ["a", "list"], "a": "x"}, "not_a_string"),
    ({"question": "wrong column name", "a": "x"}, "missing_column"),
    ({"q": "Ends with a NUL\u0000 byte", "a": "x"}, "nul_byte"),
    ({"q": "Has a bell \u0007 character", "a": "x"}, "control_characters"),
    (b'{"q": "Lone surrogate \\ud800 escape", "a": "x"}', "invalid_unicode"),
    (b'{"q": "Latin-1 bytes \xe9\xe8 are not UTF-8", "a": "x"}', "invalid_utf8"),
    (b'{"q": "truncated json', "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    ({"q": "What is the capital of France?", "a": "Paris"}, "duplicate"),
    ({"q": "word " * 20000, "a": "x"}, "too_long"),
    ({"q": "\U0001f600" * 20000, "a": "x"}, "too_long"),
    ({"q": "A fine question with a bad label?", "a": {"not": "a label"}}, "bad_label"),
    ({"q": "A fine question with a list label?", "a": [1, 2]}, "bad_label"),
    (b'{"q": "deep", "a": ' + b"[" * 100000 + b"]" * 100000 + b"}", "invalid_json"),
]

# Too long for the engine only once tokenized: under the character pre-check, over max_model_len in tokens.
# The replica finds these (the real tokenizer), so only the integration test sees this reason.
TOO_LONG_IN_TOKENS = {"q": "Summarise: " + "antidisestablishmentarianism " * 400, "a": "x"}


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(row if isinstance(row, bytes) else json.dumps(row).encode("utf-8"))
            handle.write(b"\n")
    return path


def catalogue_file(path: Path, with_token_check: bool = False) -> tuple[Path, list[str]]:
    """GOOD rows then every BAD row in one JSON Lines file; returns it and the expected reason per BAD row."""
    bad = [row for row, _ in BAD] + ([TOO_LONG_IN_TOKENS] if with_token_check else [])
    reasons = [reason for _, reason in BAD] + (["too_long"] if with_token_check else [])
    return write_jsonl(path, [*GOOD, *bad]), reasons
