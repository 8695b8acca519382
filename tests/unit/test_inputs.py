"""The partitioning pass (s2d.engine.data.inputs) run in this process, against the single-process reader (iter_inputs):
the same ids, reasons and details, each row in the shard its id hashes to (a duplicate: the shard of the
input it repeats), a source of several units resolved the same as one."""

import pyarrow as pa
import pyarrow.parquet as pq
from bad_rows import catalogue_file

import s2d.engine.data.inputs as inputs
from s2d.engine.core.spec import parse_spec
from s2d.engine.data.inputs import (
    INPUT_SCHEMA,
    INPUTS,
    compact_bucket,
    partition_unit,
    read_units,
    shard_input_name,
    shards_per_bucket,
)
from s2d.engine.data.shards import shard_of
from s2d.engine.data.sources import Quarantined, iter_inputs
from s2d.engine.data.storage import OutputLocation


def _spec(path, out, **data):
    columns = data.pop("columns", {"input": "q", "label": "a"})
    return parse_spec(
        {
            "model": "smollm2-135m",
            "task": {"name": data.pop("task", "freeform")},
            "data": {"path": str(path), "columns": columns, **data},
            "out": str(out),
        }
    )


def _partition(spec, num_shards):
    """What s2d.engine.data.inputs.prepare_inputs does with Ray tasks, run here: every unit, then compaction."""
    num_inputs, units = read_units(spec)
    OutputLocation.of(spec.out).makedirs(INPUTS)
    results = [partition_unit(spec, unit, num_shards, len(units) == 1) for unit in units]
    per_bucket = shards_per_bucket(spec.output.inputs_per_shard)
    for bucket in sorted({shard // per_bucket for result in results for shard in result.get("compact", [])}):
        compact_bucket(spec.out, bucket, spec.data.columns.id is not None)
    location = OutputLocation.of(spec.out)
    tables = [
        location.read_table(INPUTS, shard_input_name(shard), schema=INPUT_SCHEMA)
        for shard in range(num_shards)
        if location.exists(INPUTS, shard_input_name(shard))
    ]
    return num_inputs, pa.concat_tables(tables)


def _by_row(table):
    return {row["row"]: row for row in table.to_pylist()}


def test_partitioned_inputs_match_the_single_process_reader(tmp_path):
    path, _ = catalogue_file(tmp_path / "rows.jsonl")
    spec = _spec(path, tmp_path / "out")
    expected = [item for batch in iter_inputs(spec) for item in batch]
    num_inputs, table = _partition(spec, num_shards=3)
    assert num_inputs == len(expected) == table.num_rows
    rows = _by_row(table)
    for index, item in enumerate(expected):
        row = rows[index]
        assert row["input_id"] == item.input_id
        if isinstance(item, Quarantined):
            assert (row["status"], row["reason"], row["detail"]) == ("quarantined", item.reason, item.detail)
        else:
            assert row["status"] is None and row["question"] == item.question
            assert row["shard_id"] == shard_of(item.input_id, 3)


def test_duplicates_across_units_resolve_by_source_order(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "UNIT_ROWS", 2)  # several read units: parts, then a compaction round
    monkeypatch.setattr(inputs, "BUCKET_ROWS", 1)  # one shard per bucket
    questions = ["a?", "b?", "a?", "c?", "b?", "a?"]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"q": questions}), path, row_group_size=2)
    spec = _spec(path, tmp_path / "out")
    expected = [item for batch in iter_inputs(spec) for item in batch]
    num_inputs, units = read_units(spec)
    assert num_inputs == 6 and len(units) == 3
    _, table = _partition(spec, num_shards=2)
    rows = _by_row(table)
    for index, item in enumerate(expected):
        assert rows[index]["input_id"] == item.input_id
        assert rows[index]["reason"] == getattr(item, "reason", None)
        assert rows[index]["detail"] == getattr(item, "detail", None)
    first_a = next(item for item in expected if getattr(item, "question", None) == "a?")
    assert {rows[2]["shard_id"], rows[5]["shard_id"]} == {shard_of(first_a.input_id, 2)}, "with the input they repeat"


def test_limit_and_row_counts_come_from_parquet_metadata(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"q": [f"q{i}?" for i in range(10)]}), path, row_group_size=4)
    num_inputs, units = read_units(_spec(path, tmp_path / "out", limit=7))
    assert num_inputs == 7 and sum(unit.num_rows for unit in units) == 7


def test_a_shard_no_input_hashes_to_is_written_empty(tmp_path):
    from s2d.engine.data.shard_tasks import write_shard
    from s2d.engine.data.shards import open_output

    open_output(OutputLocation.of(tmp_path), 1, "fp", 0, force=False, keep_samples=True)
    entry = write_shard(str(tmp_path), 0, 1, 0, True, "job", "system1", "m").entry
    assert entry.accepted == entry.rejected == entry.quarantined == entry.samples == 0
    assert pq.read_table(tmp_path / "shards" / "shard-00000.parquet").num_rows == 0
