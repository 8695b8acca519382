"""What the workers of the generate stage do with a shard: load its inputs, write its curated rows, write
its tables. The driver only plans, schedules and commits (s2d.engine.stages.generate); rows never reach it.

- `load_shard_inputs`: a shard's valid inputs from `.inputs/` (s2d.engine.data.inputs).
- `curate_and_write`: a batch of generated rows -> the curated table (s2d.engine.data.curation) -> one part file
  per shard under `.parts/<fence>/shard-NNNNN/`; what comes back is a row of counts per shard.
- `stage_shard`: when the driver has seen all of a shard's rows, its parts (deduplicated: a retried replica
  batch repeats rows) and its inputs quarantined before generation -> the shard's tables, through the one
  mechanism the driver-side ShardWriter also uses (`s2d.engine.data.shards.shard_tables`), each written under a
  hidden staged name; the shard's exactly-once check (s2d.engine.data.accounting) runs here. Returned: its manifest
  entry (s2d.engine.data.manifest.ShardEntry: counts, reasons, checksums) and the staged name.
- `publish_shard`: the driver, holding the lease at its epoch (s2d.engine.data.lease.Lease.fenced), renames the
  staged files to the shard's own name, then rewrites the manifest: the one commit point.

Every name a worker writes carries its job's fence (lease epoch and job id): a job whose lease was taken over
writes late only under its own fence, which the new holder neither reads nor publishes (docs/reliability.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.data.curation import curate_generated
from s2d.engine.data.inputs import GENERATION_COLUMNS, INPUT_SCHEMA, INPUTS, shard_input_name
from s2d.engine.data.manifest import ShardEntry
from s2d.engine.data.ownership import is_owned_name
from s2d.engine.data.samples import SAMPLES
from s2d.engine.data.shards import CURATED_SCHEMA, PARTS, _first_of_each_input, curated_table, shard_tables
from s2d.engine.data.sources import preview
from s2d.engine.data.storage import OutputError, OutputLocation

CURATE_SECONDS_KEY = b"s2d_curate_seconds"
PART_COUNTS_SCHEMA = pa.schema(
    [
        ("shard_id", pa.int32()),
        ("part", pa.string()),
        ("rows", pa.int64()),
        ("accepted", pa.int64()),
        ("rejected", pa.int64()),
        ("quarantined", pa.int64()),
        ("samples", pa.int64()),
        ("tokens", pa.float64()),
        ("reasons", pa.string()),  # JSON {reason: count}
    ]
)


UNFENCED = "e0-0"  # the fence of a shard written and published in one process (write_shard), under no lease
# A part is private to its job and read once, by its shard's task: Arrow IPC (uncompressed), not Parquet, so that
# neither side encodes or decodes the samples' nested steps (Parquet's levels were ~1/3 of a part's CPU). Parts in
# Parquet (an earlier s2d, tests' scenes) read as well.
PART_SUFFIX = ".arrow"
PART_SUFFIXES = (PART_SUFFIX, ".parquet")


def part_folder(shard: int, fence: str) -> str:
    """Where a job's workers put a shard's part files, under `.parts/`: scoped by the job's fence."""
    if not fence or "/" in fence:
        raise ValueError(f"not a lease fence: {fence!r}")
    return f"{fence}/shard-{shard:05d}"


def staged_name(file: str, fence: str) -> str:
    """A shard file's hidden name until the lease holder publishes it: its fence and a token of the task (a
    retried task's file never collides with its first attempt's)."""
    name = f".{file}.{fence}-{uuid.uuid4().hex[:8]}.staged"
    if not is_owned_name(name):
        raise ValueError(f"not a staged name s2d gives: {name}")
    return name


def load_shard_inputs(batch: dict, out: str):
    """Ray Data stage: shard ids in, their valid inputs out (Ray Data joins what one task yields into one
    block; the pipeline splits it into replica batches)."""
    location = OutputLocation.of(out)
    for shard in batch["shard_id"]:
        table = location.read_table(INPUTS, shard_input_name(int(shard)), schema=INPUT_SCHEMA)
        yield table.filter(pc.is_null(table.column("status"))).select(GENERATION_COLUMNS)


def quarantined_row(
    input_id: str,
    shard: int,
    reason: str,
    detail: str,
    method: str,
    model: str,
    raw: str = "",
    source_row: int | None = None,
) -> dict[str, Any]:
    """A curated row for an input that never reached the replicas, with the reason."""
    return {
        "input_id": input_id,
        "shard_id": shard,
        "status": "quarantined",
        "reason": reason,
        "detail": detail,
        "raw": raw,
        "source_row": source_row,
        "method": method,
        "model": model,
        "num_samples": 0,
    }


def quarantined_from_inputs(inputs, method: str, model: str):
    """Inputs quarantined before generation (s2d.engine.data.inputs rows with a status) -> curated rows."""
    rows = inputs.select(["input_id", "shard_id", "reason", "detail", "raw", "source_row"]).to_pylist()
    return curated_table(
        quarantined_row(
            row["input_id"], row["shard_id"], row["reason"], row["detail"], method, model, row["raw"], row["source_row"]
        )
        for row in rows
    )


def curate_generated_or_quarantine(batch: pa.Table, criterion: dict[str, Any]) -> pa.Table:
    """Generated rows -> curated rows; a row the replica could not run (`input_error`) is quarantined."""
    if "input_error" not in batch.column_names or batch.column("input_error").null_count == batch.num_rows:
        return curate_generated(batch, **criterion)
    failed = pc.is_valid(batch.column("input_error"))
    quarantined = []
    for row in batch.filter(failed).select(["input_id", "shard_id", "prompt", "input_error"]).to_pylist():
        reason, _, detail = row["input_error"].partition(": ")
        quarantined.append(
            quarantined_row(
                row["input_id"],
                row["shard_id"],
                reason,
                detail,
                criterion["method"],
                criterion["model"],
                preview(row["prompt"]),
            )
        )
    return pa.concat_tables(
        [curate_generated(batch.filter(pc.invert(failed)), **criterion), curated_table(quarantined)]
    )


def curate_and_write(batch: pa.Table, out: str, criterion: dict[str, Any], fence: str = UNFENCED) -> pa.Table:
    """Ray Data stage: generated rows -> curated (the job's criterion) -> one part file per shard of the batch,
    under the job's `fence`. A row the replica could not run (`input_error`) is quarantined. Returns
    PART_COUNTS_SCHEMA rows."""
    started = time.perf_counter()
    curated = curate_generated_or_quarantine(batch, criterion)
    curated = curated.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
    location = OutputLocation.of(out)
    counts = []
    for shard in pc.unique(curated.column("shard_id")).to_pylist():
        rows = curated.filter(pc.equal(curated.column("shard_id"), shard))
        part = f"part-{uuid.uuid4().hex[:16]}{PART_SUFFIX}"
        location.makedirs(PARTS, part_folder(shard, fence))
        location.write_bytes_atomic(_ipc_bytes(rows), PARTS, part_folder(shard, fence), part)
        status = Counter(rows.column("status").to_pylist())
        reasons = Counter(
            reason
            for reason, kept in zip(rows.column("reason").to_pylist(), rows.column("status").to_pylist())
            if kept != "accepted"
        )
        samples = pc.fill_null(rows.column("num_samples"), 0)
        tokens = pc.multiply(pc.fill_null(rows.column("system2_tokens"), 0.0), pc.cast(samples, pa.float64()))
        counts.append(
            {
                "shard_id": shard,
                "part": part,
                "rows": rows.num_rows,
                "accepted": status["accepted"],
                "rejected": status["rejected"],
                "quarantined": status["quarantined"],
                "samples": pc.sum(samples).as_py() or 0,
                "tokens": pc.sum(tokens).as_py() or 0.0,
                "reasons": json.dumps({str(reason or "unknown"): count for reason, count in reasons.items()}),
            }
        )
    table = pa.Table.from_pylist(counts, schema=PART_COUNTS_SCHEMA)
    # The time travels with the batch (schema metadata survives Ray Data) for the job's stage timings.
    return table.replace_schema_metadata({CURATE_SECONDS_KEY: str(time.perf_counter() - started).encode()})


def _ipc_bytes(rows: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes()


def read_part(location: OutputLocation, folder: str, name: str) -> pa.Table:
    """A part file of `folder` (under PARTS) as CURATED_SCHEMA rows, Arrow IPC or Parquet by its suffix."""
    if not name.endswith(PART_SUFFIX):
        return location.read_table(PARTS, folder, name, schema=CURATED_SCHEMA)
    with location.fs.open_input_file(location.path(PARTS, folder, name)) as file:
        return pa.ipc.open_file(file).read_all().select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)


class ShardIncomplete(Exception):
    """Not all of the shard's inputs have come out of the pipeline yet (rows repeated by a retry were counted)."""


@dataclass(frozen=True)
class WrittenShard:
    """What a shard write hands the driver: the entry to commit, or None while some of its inputs are missing."""

    entry: ShardEntry | None
    arrived: int  # the shard's generated inputs found in its parts
    duplicates_dropped: int = 0  # rows of its parts repeated by a retried batch
    staged: str | None = None  # the hidden name of its files (the same in each table folder) until published


def stage_shard(
    out: str,
    shard: int,
    num_shards: int,
    expected: int,
    keep_samples: bool,
    job: str,
    method: str,
    model: str,
    fence: str,
) -> WrittenShard:
    """A shard's parts (those of `fence` only) and quarantined inputs -> its tables, checked and written under a
    staged name, and its manifest entry; no entry when only some of its `expected` generated inputs have arrived.
    Nothing here is visible: only the lease holder's `publish_shard` gives the files the shard's own name."""
    from s2d.engine.data.accounting import check_shard_tables

    location = OutputLocation.of(out)
    folder = part_folder(shard, fence)
    names = location.list_files(PARTS, folder, suffix=PART_SUFFIXES)
    parts = [read_part(location, folder, name) for name in names]
    generated = _first_of_each_input(pa.concat_tables(parts)) if parts else CURATED_SCHEMA.empty_table()
    arrived = generated.num_rows
    if arrived < expected:
        return WrittenShard(None, arrived)
    if arrived > expected:
        raise RuntimeError(f"shard {shard}: {arrived} inputs came out of the pipeline for {expected} sent")
    inputs = (  # no file: no input hashes to this shard
        location.read_table(INPUTS, shard_input_name(shard), schema=INPUT_SCHEMA)
        if location.exists(INPUTS, shard_input_name(shard))
        else INPUT_SCHEMA.empty_table()
    )
    quarantined = quarantined_from_inputs(inputs.filter(pc.is_valid(inputs.column("status"))), method, model)
    rows = pa.concat_tables([generated, quarantined.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)])
    entry, files = shard_tables(shard, rows, keep_samples)
    tables = {kind: table for table, kind, _ in files}
    check = check_shard_tables(shard, num_shards, tables, tables.get(SAMPLES) if keep_samples else None)
    problems = (
        [f"{len(check.duplicated_ids)} ids twice (first: {check.duplicated_ids[0]})"] if check.duplicated_ids else []
    )
    problems += [f"{len(check.misplaced_ids)} ids of another shard"] if check.misplaced_ids else []
    problems += check.sample_problems
    if sum(check.counts.values()) != inputs.num_rows:
        problems.append(f"{sum(check.counts.values())} rows for {inputs.num_rows} inputs")
    if problems:
        raise RuntimeError(f"shard {shard} fails the exactly-once check: {'; '.join(problems)}")
    # Each file checksummed as it is written: the same function as the driver-side ShardWriter's (publish_files).
    staged = staged_name(entry.file, fence)
    checksums = {kind: location.write_table_checksummed(table, kind, staged) for table, kind, _ in files}
    reasons = {
        status: dict(Counter(tables[kind].column("reason").to_pylist()))
        for kind, status in (("rejected", "rejected"), ("quarantine", "quarantined"))
    }
    entry = entry.model_copy(update={"reasons": reasons, "checksums": checksums, "job": job})
    return WrittenShard(entry, arrived, sum(map(len, parts)) - arrived, staged)


def publish_shard(location: OutputLocation, written: WrittenShard) -> None:
    """Give a staged shard's files their own name (one rename each: atomic on local and mounted filesystems). Only
    the lease holder calls it, inside `Lease.fenced`, just before the manifest rewrite that commits them."""
    for kind in written.entry.checksums:
        staged, final = location.path(kind, written.staged), location.path(kind, written.entry.file)
        try:
            location.fs.move(staged, final)
        except OSError as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise OutputError(error.errno, f"cannot publish {final}: {reason}; committed shards are intact") from None


def write_shard(
    out: str, shard: int, num_shards: int, expected: int, keep_samples: bool, job: str, method: str, model: str
) -> WrittenShard:
    """`stage_shard` and `publish_shard` in one process that holds the output alone (tools, tests): no fence."""
    written = stage_shard(out, shard, num_shards, expected, keep_samples, job, method, model, UNFENCED)
    if written.entry is not None:
        publish_shard(OutputLocation.of(out), written)
    return written
