"""Reading a user's file as records: (row index, dict | BadRecord) in file order, one per source row.

Formats: Parquet (a file or a folder of files), JSON Lines, CSV with a header, and a Hugging Face `datasets` folder
written by `save_to_disk` (read with pyarrow). A row that cannot be read as a record is a BadRecord with its reason
(s2d.engine.data.sources quarantines it); only a problem with the whole file is a DataError: missing, unknown
format, no rows, or without the input column (a CSV header or Arrow schema lacking it; no JSON Lines row having it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s2d.engine.data.compat_datasets import is_save_to_disk_folder

# The largest CSV cell read whole (characters). Python's csv stops at 128 KiB; a longer cell is quarantined as
# too_long either way, but read whole it keeps its row's size in the detail, and the rows after it stay aligned.
CSV_CELL_LIMIT = 64 << 20


class DataError(ValueError):
    """The input file as a whole cannot be read (a bad row is quarantined instead)."""


class BadRecord(Exception):
    """A row that is no usable record: its quarantine reason, a detail, and the raw value for the preview."""

    def __init__(self, reason: str, detail: str, raw: Any = None):
        super().__init__(detail)
        self.reason, self.detail, self.raw = reason, detail, raw


def detect_format(data) -> str:
    path = Path(data.path)
    if not path.exists():
        raise DataError(f"data.path {str(path)!r} does not exist")
    if data.format != "auto":
        return data.format
    if path.is_dir():
        if is_save_to_disk_folder(path):
            return "hf_disk"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise DataError(f"{path} is a folder with neither *.parquet files nor a datasets save_to_disk layout")
    suffix = path.suffix.lower()
    formats = {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "jsonl",
        ".csv": "csv",
    }
    if suffix not in formats:
        raise DataError(f"cannot tell the format of {path.name}; set data.format to parquet, jsonl, csv or hf_disk")
    return formats[suffix]


def data_files(path: Path, fmt: str, split: str = "train") -> list[Path]:
    if fmt == "hf_disk":
        return _hf_arrow_files(path, split)
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def read_records(data) -> Iterator[tuple[int, Any]]:
    fmt = detect_format(data)
    path = Path(data.path)
    if fmt == "jsonl":
        records = _read_jsonl(path)
    elif fmt == "csv":
        records = _read_csv(path, data)
    else:
        records = _read_arrow_files(data_files(path, fmt, data.split), fmt, data)
    yield from enumerate(records)


def count_rows(data) -> int:
    """The rows of a streamed source (JSON Lines, CSV, a datasets folder) up to `data.limit`, read before any
    cluster work starts. Refused as a whole: no rows at all, or a JSON Lines file none of whose rows has the
    input column (a CSV header or an Arrow schema without it is refused as the file is opened)."""
    count, has_input, first_keys = 0, False, None
    for count, (_, record) in enumerate(read_records(data), start=1):
        if isinstance(record, dict):
            has_input = has_input or data.columns.input in record
            first_keys = first_keys if first_keys is not None else sorted(record)[:20]
        if data.limit is not None and count >= data.limit:
            break
    name = data.path
    if count == 0:
        raise DataError(f"{name} has no rows: there is nothing to generate from")
    if detect_format(data) == "jsonl" and not has_input:
        seen = f"keys of its first object: {first_keys}" if first_keys is not None else "no row is a JSON object"
        raise DataError(
            f"{name}: none of its {count} row{'s' * (count != 1)} has the input column {data.columns.input!r} "
            f"({seen}); set data.columns.input"
        )
    return count


def _read_jsonl(path: Path) -> Iterator[Any]:
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines are layout, not rows
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield BadRecord(
                    "invalid_utf8", f"line {line_number} is not UTF-8 ({error.reason} at byte {error.start})", line
                )
                continue
            try:
                yield json.loads(text)
            except (json.JSONDecodeError, RecursionError) as error:
                yield BadRecord("invalid_json", f"line {line_number}: {getattr(error, 'msg', error)}", text)


def _read_csv(path: Path, data) -> Iterator[Any]:
    # surrogateescape keeps a row with bad bytes readable; the validator reports it as invalid_unicode.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path} has no header row")
        _check_schema_names(header, data, path)
        while True:
            line = reader.line_num + 1
            try:
                cells = _next_csv_row(reader)
            except StopIteration:
                return
            except csv.Error as error:
                # The reader drops the rest of the physical line and goes on at the next one: a quoted cell over
                # the limit that spans lines may leave its other lines as malformed rows (the bound is far above
                # any input a context holds).
                reason = "too_long" if "field limit" in str(error) else "malformed_row"
                yield BadRecord(reason, f"line {line}: {error}", None)
                continue
            if len(cells) != len(header):
                yield BadRecord("malformed_row", f"{len(cells)} fields, the header has {len(header)}", cells)
            else:
                # An empty CSV cell is "no value", like a null in Parquet or JSON.
                yield {name: (cell if cell != "" else None) for name, cell in zip(header, cells)}


def _next_csv_row(reader) -> list[str]:
    """The next row, read with CSV_CELL_LIMIT instead of Python's 128 KiB default: an over-long cell is then a row
    the validator quarantines as too_long (its size in the detail), not a failed read. The limit is process-wide,
    so it is raised only while this reader parses a row."""
    previous = csv.field_size_limit(CSV_CELL_LIMIT)
    try:
        return next(reader)
    finally:
        csv.field_size_limit(previous)


def _read_arrow_files(files: list[Path], fmt: str, data) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files:
        raise DataError(f"no data files under {data.path}")
    for path in files:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            check_schema(parquet.schema_arrow, data, path)
            batches = parquet.iter_batches(batch_size=4096)
        else:
            reader = _open_arrow_stream(pa, path)
            check_schema(reader.schema, data, path)
            batches = reader
        for batch in batches:
            yield from batch.to_pylist()


def _open_arrow_stream(pa, path: Path):
    try:
        return pa.ipc.open_stream(pa.memory_map(str(path)))
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(str(path))).get_record_batch_reader()


def check_schema(schema, data, path: Path) -> None:
    _check_schema_names(schema.names, data, path)


def _check_schema_names(names: list[str], data, path: Path) -> None:
    if data.columns.input not in names:
        shown = names[:20] + ["..."] * (len(names) > 20)
        raise DataError(f"{path} has no input column {data.columns.input!r} (columns: {shown}); set data.columns.input")


def _hf_arrow_files(path: Path, split: str) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder (a Dataset, or one split of a DatasetDict)."""
    from s2d.engine.data.compat_datasets import NotADatasetsFolder, save_to_disk_files

    try:
        return save_to_disk_files(path, split)
    except NotADatasetsFolder as error:
        raise DataError(str(error)) from error
