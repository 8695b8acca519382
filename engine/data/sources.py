"""Where a job's inputs come from: a built-in task's generator, or the user's file validated row by row.

User files: Parquet (a file or a folder of files), JSON Lines, CSV, or a Hugging Face `datasets` folder
written by `save_to_disk`, read without the `datasets` library. A column mapping (`data.columns`) names
the input column and the optional label, options and response columns. Every row of the file becomes
exactly one input: a valid TaskInput, or a Quarantined record whose reason says what is wrong with it
(the job goes on; `<out>/quarantine/` lists them). Only a problem with the whole file (missing, unknown
format, no rows, the input column absent from the file) is an error, found before any cluster work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d.engine.core.tasks import TaskInput, get_task, make_input_id
from s2d.engine.core.tasks.base import input_fields_of
from s2d.engine.data.readers import BadRecord as _BadRecord
from s2d.engine.data.readers import DataError as DataError  # re-exported: callers catch it from here
from s2d.engine.data.readers import data_files, detect_format, read_records

RAW_PREVIEW_CHARS = 200
# No tokenizer packs more than this many characters into one token on average, so longer inputs cannot fit
# the context; the replica checks the exact token count of everything shorter.
MAX_CHARS_PER_TOKEN = 16
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Quarantined:
    input_id: str
    source_row: int | None
    reason: str
    detail: str
    raw: str


def iter_inputs(spec, batch_rows: int = 4096) -> Iterator[list[TaskInput | Quarantined]]:
    """The job's inputs in batches, in source order; each source row yields exactly one item."""
    if not spec.data.path:
        items = get_task(spec.task.name).generate(spec.task.num_inputs, spec.task.seed, "train")
        for start in range(0, len(items), batch_rows):
            yield items[start : start + batch_rows]
        return
    validator = _Validator(spec)
    batch: list[TaskInput | Quarantined] = []
    for index, record in read_records(spec.data):
        if spec.data.limit is not None and index >= spec.data.limit:
            break
        batch.append(validator.validate(index, record))
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def labeled_eval_inputs(spec) -> list[TaskInput]:
    """Held-out inputs of a job on the user's data: valid, labeled rows of `data.eval_path` not in `data.path`."""
    if not spec.data.eval_path:
        raise ValueError(
            "evaluating a job on your own data needs data.eval_path: a labeled file with the same "
            "columns (and data.columns.label)"
        )
    if spec.data.columns.label is None:
        raise ValueError("evaluation needs ground truth: set data.columns.label")
    eval_spec = spec.model_copy(
        update={"data": spec.data.model_copy(update={"path": spec.data.eval_path, "format": "auto", "limit": None})}
    )
    distilled = {item.input_id for batch in iter_inputs(spec) for item in batch}
    held_out = [
        item
        for batch in iter_inputs(eval_spec)
        for item in batch
        if isinstance(item, TaskInput) and item.label is not None and item.input_id not in distilled
    ]
    if not held_out:
        raise ValueError(f"no valid, labeled rows in {spec.data.eval_path} that are not also distillation inputs")
    return held_out[: spec.eval.num_inputs]


def source_fingerprint(spec) -> str | None:
    """Content hash of the user's file(s): a changed file under the same path must not resume old shards."""
    if not spec.data.path:
        return None
    digest = hashlib.sha256()
    for path in data_files(Path(spec.data.path), detect_format(spec.data), spec.data.split):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class _Validator:
    """One source row -> a TaskInput or a Quarantined record. With `dedupe` off (the partitioning pass, where
    rows are checked in parallel) a row is checked on its own; duplicates are then found per shard
    (s2d.engine.data.inputs): a row's id decides its shard, so every copy of an input meets the others there."""

    def __init__(self, spec, dedupe: bool = True):
        self.dedupe = dedupe
        self.task = get_task(spec.task.name)
        self.task_name = spec.task.name
        self.columns = spec.data.columns
        self.max_chars = spec.engine.max_model_len * MAX_CHARS_PER_TOKEN
        self.fields = input_fields_of(self.task)
        self.first_row_of: dict[str, int] = {}  # input_id -> source row, to name the original of a duplicate

    def validate(self, index: int, record: Any) -> TaskInput | Quarantined:
        try:
            if isinstance(record, _BadRecord):
                raise record
            if not isinstance(record, dict):
                raise _BadRecord("not_an_object", f"a row is a JSON object, got {type(record).__name__}", record)
            text = self._text(record, self.columns.input, "input")
            fields = self._structured_fields(record, text)
            question = self.task.compose(fields) if fields else text
            label = self._label(record)
            input_id = self._input_id(record, question)
        except _BadRecord as bad:
            return Quarantined(self._quarantine_id(index, record), index, bad.reason, bad.detail, preview(bad.raw))
        first = self.first_row_of.setdefault(input_id, index) if self.dedupe else index
        if first != index:
            same = "id" if self.columns.id is not None else "input"
            return Quarantined(
                make_input_id("row", str(index)), index, "duplicate", f"same {same} as row {first}", preview(question)
            )
        return TaskInput(input_id, question, label, fields)

    def _quarantine_id(self, index: int, record: Any) -> str:
        """A bad row's input_id: the user's id when the row has a usable one that no earlier row took (so the
        user finds the row by it), else one derived from the row number (unique either way)."""
        value = record.get(self.columns.id) if self.columns.id is not None and isinstance(record, dict) else None
        if _usable_id(value) and (not self.dedupe or self.first_row_of.setdefault(str(value), index) == index):
            return str(value)
        return make_input_id("row", str(index))

    def _text(self, record: dict, column: str, role: str) -> str:
        if column not in record:
            raise _BadRecord("missing_column", f"no {role} column {column!r} in this row", sorted(record)[:10])
        value = record[column]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _BadRecord(
                    "invalid_utf8", f"{role} is not UTF-8 ({error.reason} at byte {error.start})", value
                ) from None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise _BadRecord("null", f"{role} is null", value)
        if not isinstance(value, str):
            raise _BadRecord("not_a_string", f"{role} is a {type(value).__name__}, not text", value)
        if value == "":
            raise _BadRecord("empty", f"{role} is an empty string", value)
        if not value.strip():
            raise _BadRecord("whitespace_only", f"{role} has only whitespace", value)
        if "\x00" in value:
            raise _BadRecord("nul_byte", f"{role} contains a NUL character", value)
        if _SURROGATE.search(value):
            raise _BadRecord(
                "invalid_unicode",
                f"{role} has a lone surrogate (invalid UTF-8 bytes or a bad \\u escape); it cannot be encoded",
                value.encode("utf-8", "backslashreplace"),
            )
        if _CONTROL.search(value):
            raise _BadRecord("control_characters", f"{role} contains control characters", value)
        if len(value) > self.max_chars:
            raise _BadRecord(
                "too_long",
                f"{role} has {len(value)} characters; engine.max_model_len="
                f"{self.max_chars // MAX_CHARS_PER_TOKEN} tokens cannot hold it",
                value,
            )
        return value

    def _structured_fields(self, record: dict, text: str) -> dict[str, Any]:
        if not self.fields:
            return {}
        fields: dict[str, Any] = {}
        for name in self.fields:
            column = getattr(self.columns, name, None)
            if name == "options":
                fields[name] = self._options(record, column)
            elif column is None:  # the task's main text field (instruction, stem) is the input column
                fields[name] = text
            else:
                fields[name] = self._text(record, column, name)
        try:
            self.task.compose(fields)
        except (ValueError, KeyError) as error:
            raise _BadRecord("bad_fields", str(error), fields) from None
        return fields

    def _options(self, record: dict, column: str | None) -> list[str]:
        if column is None:
            raise _BadRecord("missing_column", "this task needs data.columns.options", None)
        options = record.get(column)
        if isinstance(options, str):  # CSV cells hold JSON lists
            try:
                options = json.loads(options)
            except json.JSONDecodeError:
                raise _BadRecord("bad_options", "options is text that is not a JSON list", options) from None
        if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) and o.strip() for o in options):
            raise _BadRecord("bad_options", "options must be a list of non-empty strings", options)
        return list(options)

    def _label(self, record: dict) -> str | None:
        column = self.columns.label
        if column is None or record.get(column) is None:
            return None
        value = record[column]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _BadRecord("bad_label", f"label is a {type(value).__name__}; labels are text or numbers", value)
        return str(value)

    def _input_id(self, record: dict, question: str) -> str:
        if self.columns.id is None:
            return make_input_id(self.task_name, question)
        value = record.get(self.columns.id)
        if not _usable_id(value):
            raise _BadRecord("bad_id", f"id column {self.columns.id!r} is missing or not a scalar", value)
        return str(value)


def _usable_id(value: Any) -> bool:
    """A scalar with text in it (a NaN is a missing value, as pandas writes one)."""
    if value is None or isinstance(value, (dict, list, tuple, bool)):
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() != ""


def preview(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= RAW_PREVIEW_CHARS else f"{text[:RAW_PREVIEW_CHARS]}... ({len(text)} chars)"
