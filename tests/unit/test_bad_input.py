"""Bad input at the door: a file that cannot make a job is refused in one line before Ray starts, an oversized
CSV cell is a quarantined row, and a damaged output or job file is one line, never a traceback."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2d.engine.cli import main
from s2d.engine.core.spec import parse_spec
from s2d.engine.core.tasks import TaskInput
from s2d.engine.data import readers
from s2d.engine.data.inputs import read_units
from s2d.engine.data.ownership import MANIFEST, ForeignOutput, claim_output
from s2d.engine.data.shards import ShardWriter, curated_table
from s2d.engine.data.sources import iter_inputs
from s2d.engine.data.storage import OutputLocation
from s2d.engine.stages.generate import _open_output

ROOT = Path(__file__).parents[2]


def _spec(path, out="runs/unused", **columns):
    return parse_spec(
        {
            "model": "smollm2-135m",
            "out": str(out),
            "task": {"name": "freeform"},
            "data": {"path": str(path), "columns": columns or {"input": "q"}},
        }
    )


def _items(spec):
    return [item for batch in iter_inputs(spec) for item in batch]


# ---- an oversized CSV cell ----------------------------------------------------------------------------------------


def test_a_csv_cell_over_128_kib_is_a_quarantined_row_with_its_size(tmp_path):
    path = tmp_path / "rows.csv"
    one_line = "x" * 200_000  # over Python csv's 128 KiB default field limit
    spanning = "multi\nline " + "y" * 300_000 + "\nend"  # a quoted cell over several lines
    path.write_text(f'q,a\nfirst?,1\n"{one_line}",2\nsecond?,3\n"{spanning}",4\nthird?,5\n')
    limit_before = csv.field_size_limit()
    spec = _spec(path)
    assert read_units(spec)[0] == 5, "counted like any other row, not a failed job"
    items = _items(spec)
    assert [getattr(item, "question", None) for item in items] == ["first?", None, "second?", None, "third?"]
    for item, size in ((items[1], 200_000), (items[3], len(spanning))):
        assert item.reason == "too_long" and f"input has {size} characters" in item.detail
        assert len(item.raw) < 300
    assert (items[1].source_row, items[3].source_row) == (1, 3)
    assert csv.field_size_limit() == limit_before, "the process-wide limit is raised only while a row is read"


def test_a_cell_over_the_bound_is_quarantined_and_the_rows_after_it_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CSV_CELL_LIMIT", 1000)  # the bound (64 Mi characters) made small enough to reach
    path = tmp_path / "rows.csv"
    path.write_text(f"q,a\nfirst?,1\n{'z' * 5000},2\nsecond?,3\n")
    items = _items(_spec(path))
    assert isinstance(items[0], TaskInput) and isinstance(items[2], TaskInput) and items[2].question == "second?"
    assert items[1].reason == "too_long" and items[1].detail.startswith("line 3: field larger than field limit (1000)")


# ---- a file that cannot make a job: one line before Ray starts ----------------------------------------------------


def _datasets_folder(folder: Path, table: pa.Table) -> Path:
    folder.mkdir()
    arrow = folder / "data-00000-of-00001.arrow"
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": arrow.name}]}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def _no_input_column(kind: str, tmp_path: Path) -> Path:
    if kind == "csv":
        path = tmp_path / "rows.csv"
        path.write_text("question,a\nWhat?,1\n")
    elif kind == "jsonl":
        path = tmp_path / "rows.jsonl"
        path.write_text('{"question": "What?"}\n{"question": "Why?"}\n')
    elif kind == "parquet":
        path = tmp_path / "rows.parquet"
        pq.write_table(pa.table({"question": ["What?"]}), path)
    else:
        path = _datasets_folder(tmp_path / "ds", pa.table({"question": ["What?"]}))
    return path


def _empty(kind: str, tmp_path: Path) -> Path:
    if kind == "csv":
        path = tmp_path / "rows.csv"
        path.write_text("q,a\n")
    elif kind == "jsonl":
        path = tmp_path / "rows.jsonl"
        path.write_text("\n\n")
    elif kind == "parquet":
        path = tmp_path / "rows.parquet"
        pq.write_table(pa.table({"q": pa.array([], pa.string())}), path)
    else:
        path = _datasets_folder(tmp_path / "ds", pa.table({"q": pa.array([], pa.string())}))
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "hf_disk"])
@pytest.mark.parametrize(
    "make, expected",
    [(_no_input_column, "has the input column 'q'|has no input column 'q'"), (_empty, "has no rows")],
    ids=["no-input-column", "empty"],
)
def test_a_source_that_cannot_make_a_job_is_one_line_before_ray_starts(
    tmp_path, capsys, monkeypatch, kind, make, expected
):
    path = make(kind, tmp_path)
    out = tmp_path / "run"
    # The suite's integration tests may have left a Ray running in this process: what must not happen is this job
    # reaching Ray at all.
    connects = []
    monkeypatch.setattr("s2d.cluster.connect.connect", lambda *args, **kwargs: connects.append(args) or 1 / 0)
    code = main(
        [
            "generate",
            "configs/demo.yaml",
            f"data.path={path}",
            "data.columns.input=q",
            "task.name=freeform",
            "method.name=cot",
        ]
        + [f"out={out}", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("s2d: error: "), err
    assert path.name in err and re.search(expected, err), err
    assert not connects, "refused before Ray started"
    assert not (out / MANIFEST).exists() and not (out / "job.yaml").exists()


def test_a_jsonl_where_only_some_rows_lack_the_column_goes_on(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "What?"}\n{"q": "Why?"}\n')
    spec = _spec(path)
    assert read_units(spec)[0] == 2
    assert [getattr(item, "reason", None) for item in _items(spec)] == ["missing_column", None]


# ---- a damaged output, a bad job file: one line -------------------------------------------------------------------


def _committed_output(out: Path) -> Path:
    writer = ShardWriter.open(out, 1, "fp", {0: 1})
    writer.add(curated_table([{"input_id": "a", "shard_id": 0, "status": "accepted", "prompt": "p", "answer": "x"}]))
    return out


@pytest.mark.parametrize("damaged", [MANIFEST, "shards/shard-00000.parquet"])
def test_status_on_a_truncated_file_is_one_line_and_exit_1(tmp_path, capsys, damaged):
    out = _committed_output(tmp_path / "run")
    target = out / damaged
    target.write_bytes(target.read_bytes()[:40])
    assert main(["status", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("s2d: error: ") and damaged.split("/")[-1] in err
    assert "Traceback" not in err


def test_a_job_file_that_is_not_utf8_exits_2_with_one_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_bytes(b"model: smollm2-135m\nout: caf\xe9\n")
    result = subprocess.run(
        [sys.executable, "-m", "s2d.engine.cli", "generate", str(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"s2d: error: {job}: not UTF-8 text (byte 0xe9 at line 2)"


# ---- --force and an unreadable manifest ---------------------------------------------------------------------------


def _open(out: Path, force: bool):
    return _open_output(OutputLocation.of(out), 1, "new-job", 1, force=force, keep_samples=False)


def test_force_moves_an_unreadable_manifest_aside_and_starts_afresh(tmp_path):
    out = _committed_output(tmp_path / "run")
    truncated = (out / MANIFEST).read_bytes()[:40]
    (out / MANIFEST).write_bytes(truncated)
    with pytest.raises(ForeignOutput, match="unreadable manifest.*--force moves it aside"):
        _open(out, force=False)
    assert (out / MANIFEST).read_bytes() == truncated, "refused: nothing moved"
    manifest = _open(out, force=True)
    assert manifest.fingerprint == "new-job" and not manifest.shards
    aside = sorted(out.glob(f"{MANIFEST}.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == truncated, "kept for a look, never deleted"
    assert not (out / "shards" / "shard-00000.parquet").exists(), "the old job's shards are discarded, as --force says"


def test_force_does_not_move_a_manifest_outside_an_s2d_output_or_of_a_newer_s2d(tmp_path):
    legacy = tmp_path / "legacy"  # no marker: not known to be s2d's
    legacy.mkdir()
    (legacy / MANIFEST).write_text('{"fingerprint": "x", "num_sh')
    with pytest.raises(ForeignOutput, match="unreadable manifest"):
        claim_output(legacy)
    with pytest.raises(ForeignOutput):
        _open(legacy, force=True)
    assert not list(legacy.glob("*.unreadable-*"))
    newer = _committed_output(tmp_path / "newer")
    manifest = json.loads((newer / MANIFEST).read_text())
    (newer / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ForeignOutput, match="newer s2d"):
        _open(newer, force=True)
    assert not list(newer.glob("*.unreadable-*"))
