"""A job's inputs, partitioned by shard into `<out>/.inputs/` by Ray tasks: the driver never holds them.

The source is cut into read units (row-group ranges of a Parquet input, or one unit for a JSON Lines, CSV
or `datasets` folder source and for a built-in task's generator). A Ray task per unit reads and validates
its rows and writes them partitioned by shard (`.inputs/shard-00003/part-00001.parquet`); a second round
of tasks resolves each shard (the first row of an input_id wins it, later copies are quarantined as
`duplicate`: every copy of an input hashes to the same shard, so this is exact) and compacts it into
`.inputs/shard-00003.parquet`, valid and quarantined rows together. The driver keeps only what a shard
needs: its counts of valid and quarantined inputs (`plan.json`). A resumed job reuses a finished plan.

Unchanged from the single-process reader: input ids, the shard of each id (`shard_of`), the reasons and
details of quarantined rows. A row that loses an id to an earlier row gets the id of its row number, as
before, but stays in the shard of the id it duplicated (so that shard's counts are known in one pass).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.tasks import TaskInput, get_task, make_input_id
from s2d.engine.data.shards import shard_of
from s2d.engine.data.storage import OutputLocation

INPUTS = ".inputs"
PLAN = "plan.json"
# Rows per read unit of a Parquet source (whole row groups): a partitioning task's slice of the input. Checking a
# row is Python (~10 us), so a 1M-row file as one unit kept one core busy ~10 s while the others waited;
# 250k rows make four tasks (row groups permitting) at the cost of one compaction round.
UNIT_ROWS = 250_000
CHUNK_ROWS = 1_000_000  # rows a partitioning task holds at once
BUCKET_ROWS = 500_000  # inputs of the shards that share a partition bucket (what a compaction task holds)

INPUT_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("shard_id", pa.int32()),
        ("row", pa.int64()),  # position in the source: the first row of an id wins it
        ("source_row", pa.int64()),  # row number in the user's file; null for built-in tasks
        ("question", pa.string()),
        ("prompt", pa.string()),
        ("fields", pa.string()),
        ("status", pa.string()),  # null: valid; "quarantined"
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)
GENERATION_COLUMNS = ["input_id", "shard_id", "question", "prompt", "fields"]


@dataclass(frozen=True)
class ReadUnit:
    index: int
    first_row: int  # global index of the unit's first row
    num_rows: int | None  # None: to the end of the source (single-unit sources)
    path: str | None = None  # a Parquet file (row-group units)
    row_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class InputPlan:
    num_inputs: int
    num_shards: int
    valid: np.ndarray  # per shard: inputs that go to the replicas
    quarantined: np.ndarray  # per shard: inputs quarantined before generation

    @property
    def per_shard(self) -> np.ndarray:
        return self.valid + self.quarantined

    def to_json(self, fingerprint: str) -> bytes:
        return json.dumps(
            {
                "fingerprint": fingerprint,
                "num_inputs": self.num_inputs,
                "num_shards": self.num_shards,
                "valid": self.valid.tolist(),
                "quarantined": self.quarantined.tolist(),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, fingerprint: str) -> InputPlan | None:
        found = json.loads(data)
        if found.get("fingerprint") != fingerprint:
            return None
        return cls(
            found["num_inputs"],
            found["num_shards"],
            np.array(found["valid"], np.int64),
            np.array(found["quarantined"], np.int64),
        )


def read_units(spec) -> tuple[int, list[ReadUnit]]:
    """How many inputs the source holds, and its read units. Counting streams (no row is kept). Raises DataError
    on a source that cannot make a job (no input column, no rows): the generate stage calls it before Ray starts."""
    from s2d.engine.data.readers import count_rows, data_files, detect_format

    data = spec.data
    if not data.path:
        return spec.task.num_inputs, [ReadUnit(0, 0, None)]
    fmt = detect_format(data)
    limit = data.limit
    if fmt != "parquet":
        return count_rows(data), [ReadUnit(0, 0, None)]
    import pyarrow.parquet as pq

    from s2d.engine.data.readers import DataError, check_schema

    files = data_files(Path(data.path), fmt, data.split)
    if not files:
        raise DataError(f"no data files under {data.path}")
    units: list[ReadUnit] = []
    total = 0
    for path in files:
        metadata = pq.ParquetFile(path)
        check_schema(metadata.schema_arrow, data, path)
        groups: list[int] = []
        first, rows = total, 0
        for group in range(metadata.metadata.num_row_groups):
            if limit is not None and total >= limit:
                break
            size = metadata.metadata.row_group(group).num_rows
            size = min(size, limit - total) if limit is not None else size
            groups.append(group)
            rows += size
            total += size
            if rows >= UNIT_ROWS:
                units.append(ReadUnit(len(units), first, rows, str(path), tuple(groups)))
                groups, first, rows = [], total, 0
        if groups:
            units.append(ReadUnit(len(units), first, rows, str(path), tuple(groups)))
    if total == 0:
        raise DataError(f"{data.path} has no rows: there is nothing to generate from")
    return total, units


def _unit_records(spec, unit: ReadUnit):
    """(global row index, TaskInput | Quarantined) of one unit, rows checked each on its own."""
    from s2d.engine.data.readers import read_records
    from s2d.engine.data.sources import _Validator

    if not spec.data.path:
        items = get_task(spec.task.name).generate(spec.task.num_inputs, spec.task.seed, "train")
        yield from enumerate(items)
        return
    validator = _Validator(spec, dedupe=False)
    if unit.path is None:
        for index, record in read_records(spec.data):
            if spec.data.limit is not None and index >= spec.data.limit:
                return
            yield index, validator.validate(index, record)
        return
    import pyarrow.parquet as pq

    index, end = unit.first_row, unit.first_row + unit.num_rows
    for batch in pq.ParquetFile(unit.path).iter_batches(batch_size=4096, row_groups=list(unit.row_groups)):
        for record in batch.to_pylist():
            if index >= end:
                return
            yield index, validator.validate(index, record)
            index += 1


def prompt_and_fields(task, item: TaskInput) -> tuple[str, str]:
    """What the replicas get of a valid input: the direct (System 1) prompt, and its structured parts
    (pairwise_judge's responses, multiple_choice's options) for method templates and perturbations, as JSON so
    that every task's rows share one Arrow type."""
    return task.system1_prompt(item.question), json.dumps(item.fields, ensure_ascii=False) if item.fields else "{}"


def partition_unit(spec, unit: ReadUnit, num_shards: int, resolve_here: bool) -> dict[str, Any]:
    """Read, check and partition one unit into `.inputs/`, a chunk of rows at a time (a worker's memory is
    bounded by CHUNK_ROWS, not the unit). `resolve_here` (the whole source is this unit): when it fits one
    chunk, resolve and compact each shard now, in one round. Returns the counts of the shards it resolved,
    or the shards it left parts in (`compact`)."""
    from s2d.engine.data.sources import Quarantined

    task = get_task(spec.task.name)
    user_file = bool(spec.data.path)
    location = OutputLocation.of(spec.out)
    columns: dict[str, list] = {name: [] for name in INPUT_SCHEMA.names}
    chunks = 0
    touched: set[int] = set()

    def flush(final: bool) -> dict[str, list[int]] | None:
        nonlocal chunks, columns
        table = pa.table(columns, schema=INPUT_SCHEMA)
        columns = {name: [] for name in INPUT_SCHEMA.names}
        resolve = final and resolve_here and chunks == 0
        counts = _write_partitions(location, table, f"part-{unit.index:05d}-{chunks:05d}.parquet", resolve, spec)
        chunks += 1
        touched.update(counts["shards"])
        return counts if resolve else None

    for index, item in _unit_records(spec, unit):
        columns["input_id"].append(item.input_id)
        columns["shard_id"].append(shard_of(item.input_id, num_shards))
        columns["row"].append(index)
        if isinstance(item, Quarantined):
            values = (item.source_row, None, None, None, "quarantined", item.reason, item.detail, item.raw)
        else:
            assert isinstance(item, TaskInput)
            prompt, fields = prompt_and_fields(task, item)
            values = (index if user_file else None, item.question, prompt, fields, None, None, None, None)
        for name, value in zip(INPUT_SCHEMA.names[3:], values):
            columns[name].append(value)
        if len(columns["row"]) >= CHUNK_ROWS:
            flush(final=False)
    resolved = flush(final=True)
    return resolved if resolved is not None else {"compact": sorted(touched)}


def _write_partitions(
    location: OutputLocation, table: pa.Table, part: str, resolve: bool, spec
) -> dict[str, list[int]]:
    """Resolved: one file per shard. Otherwise one part per bucket of shards (a few files per unit however
    many shards the job has), sorted by shard, for the compaction round."""
    shard_ids = table.column("shard_id").to_numpy()
    order = np.argsort(shard_ids, kind="stable")
    table = table.take(order)
    found: dict[str, list[int]] = {"shards": [], "valid": [], "quarantined": []}
    if not resolve:
        per_bucket = shards_per_bucket(spec.output.inputs_per_shard)
        buckets, starts, counts = np.unique(shard_ids[order] // per_bucket, return_index=True, return_counts=True)
        for bucket, start, count in zip(buckets.tolist(), starts.tolist(), counts.tolist()):
            location.makedirs(INPUTS, bucket_folder(bucket))
            location.write_table_atomic(table.slice(start, count), INPUTS, bucket_folder(bucket), part)
        found["shards"] = np.unique(shard_ids).tolist()
        return found
    shards, starts, counts = np.unique(shard_ids[order], return_index=True, return_counts=True)
    for shard, start, count in zip(shards.tolist(), starts.tolist(), counts.tolist()):
        rows = resolve_duplicates(table.slice(start, count), spec.data.columns.id is not None)
        location.write_table_atomic(rows, INPUTS, shard_input_name(shard))
        found["shards"].append(shard)
        _count(found, rows)
    return found


def shards_per_bucket(inputs_per_shard: int) -> int:
    """Shards per partition bucket: a bucket holds about BUCKET_ROWS inputs (what a compaction task holds)."""
    return max(1, BUCKET_ROWS // inputs_per_shard)


def bucket_folder(bucket: int) -> str:
    return f"bucket-{bucket:05d}"


def _count(found: dict[str, list[int]], rows: pa.Table) -> None:
    quarantined = pc.sum(pc.is_valid(rows.column("status"))).as_py() or 0
    found["valid"].append(rows.num_rows - quarantined)
    found["quarantined"].append(quarantined)


def compact_bucket(out: str, bucket: int, by_id: bool) -> dict[str, list[int]]:
    """Second round (sources of several units or chunks): a bucket's parts -> one resolved file per shard."""
    location = OutputLocation.of(out)
    folder = bucket_folder(bucket)
    names = location.list_files(INPUTS, folder, suffix=".parquet")
    parts = [location.read_table(INPUTS, folder, name, schema=INPUT_SCHEMA) for name in names]
    table = pa.concat_tables(parts) if parts else INPUT_SCHEMA.empty_table()
    shard_ids = table.column("shard_id").to_numpy()
    order = np.argsort(shard_ids, kind="stable")
    table = table.take(order)
    shards, starts, counts = np.unique(shard_ids[order], return_index=True, return_counts=True)
    found: dict[str, list[int]] = {"shards": [], "valid": [], "quarantined": []}
    for shard, start, count in zip(shards.tolist(), starts.tolist(), counts.tolist()):
        rows = resolve_duplicates(table.slice(start, count), by_id)
        location.write_table_atomic(rows, INPUTS, shard_input_name(shard))
        found["shards"].append(shard)
        _count(found, rows)
    location.delete(INPUTS, folder)
    return found


def shard_input_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def resolve_duplicates(rows: pa.Table, by_id: bool) -> pa.Table:
    """The first row (in source order) of each input_id keeps it; a later valid row with the same id is
    quarantined as `duplicate`; a later bad row that claimed the id (the user's id column) gets the id of its
    row number. Either keeps its place in this shard."""
    if not rows.num_rows:
        return rows
    rows = rows.sort_by("row")
    codes = pc.dictionary_encode(rows.column("input_id").combine_chunks()).indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    if len(first) == rows.num_rows:
        return rows
    first_row_of_code = rows.column("row").to_numpy()[first]
    source_rows = rows.column("source_row").to_pylist()
    first_source = {int(code): source_rows[index] for code, index in zip(np.arange(len(first)), first)}
    is_first = np.zeros(rows.num_rows, bool)
    is_first[first] = True
    records = rows.to_pylist()
    same = "id" if by_id else "input"
    for index in np.flatnonzero(~is_first).tolist():
        record = records[index]
        original = first_source[int(codes[index])]
        original = original if original is not None else int(first_row_of_code[codes[index]])
        record["input_id"] = make_input_id(
            "row", str(record["source_row"] if record["source_row"] is not None else record["row"])
        )
        if record["status"] is None:
            from s2d.engine.data.sources import preview

            record.update(
                status="quarantined",
                reason="duplicate",
                detail=f"same {same} as row {original}",
                raw=preview(record["question"]),
                question=None,
                prompt=None,
                fields=None,
            )
    return pa.Table.from_pylist(records, schema=INPUT_SCHEMA)


def prepare_inputs(ray, spec, num_inputs: int, units: list[ReadUnit], num_shards: int, fingerprint: str) -> InputPlan:
    """Partition the job's inputs into `.inputs/` with Ray tasks (or reuse a finished partition of this job),
    and return the per-shard counts. The driver holds O(shards) integers, never an input."""
    location = OutputLocation.of(spec.out)
    found = location.read_bytes(INPUTS, PLAN)
    if found is not None and (plan := InputPlan.from_json(found, fingerprint)) is not None:
        return plan
    location.delete(INPUTS)
    location.makedirs(INPUTS)
    valid = np.zeros(num_shards, np.int64)
    quarantined = np.zeros(num_shards, np.int64)

    def add(result: dict[str, list[int]]) -> None:
        valid[result["shards"]] += result["valid"]
        quarantined[result["shards"]] += result["quarantined"]

    partition = ray.remote(partition_unit).options(max_retries=3)
    results = ray.get([partition.remote(spec, unit, num_shards, len(units) == 1) for unit in units])
    per_bucket = shards_per_bucket(spec.output.inputs_per_shard)
    buckets = sorted({shard // per_bucket for result in results for shard in result.get("compact", [])})
    for result in results:
        if "compact" not in result:
            add(result)
    compact = ray.remote(compact_bucket).options(max_retries=3)
    for result in ray.get([compact.remote(spec.out, bucket, spec.data.columns.id is not None) for bucket in buckets]):
        add(result)
    if int(valid.sum() + quarantined.sum()) != num_inputs:
        raise RuntimeError(
            f"the input source changed while it was read: {num_inputs} rows counted, "
            f"{int(valid.sum() + quarantined.sum())} partitioned"
        )
    plan = InputPlan(num_inputs, num_shards, valid, quarantined)
    location.write_bytes_atomic(plan.to_json(fingerprint), INPUTS, PLAN)
    return plan
