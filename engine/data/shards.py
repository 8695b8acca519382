"""Parquet shards: deterministic partitioning, exactly-once shard commit and resume (the accounting check over
them is s2d.engine.data.accounting).

Layout under <out>/ (a local path or a pyarrow filesystem URI, see s2d.engine.data.storage):
  shards/shard-00003.parquet       accepted inputs of shard 3 (ACCEPTED_SCHEMA)
  rejected/shard-00003.parquet     inputs of shard 3 that failed self-consistency (REJECTED_SCHEMA)
  quarantine/shard-00003.parquet   bad inputs of shard 3, with the reason (QUARANTINE_SCHEMA)
  samples/shard-00003.parquet      every System 2 sample of shard 3's generated inputs (s2d.engine.data.samples;
                                   unless output.keep_samples is off)
  manifest.json                    the commit record: committed shards with counts, the spec fingerprint
                                   (s2d.engine.data.manifest: the typed model, the one reader and writer)
  .inputs/                         the job's inputs partitioned by shard (s2d.engine.data.inputs; removed at the end)
  .parts/<fence>/                  curated rows of uncommitted shards, written by workers under their job's lease fence
                                   (s2d.engine.data.shard_tasks)
  .staging/                        rows the driver-side ShardWriter spilled to disk (discarded on resume)
  .lease.json                      who is writing this output (s2d.engine.data.lease)
  .lease.epoch                     the last lease epoch granted here (fencing tokens never repeat)

Every input belongs to one shard, by a hash of its input_id. A shard is committed once all its inputs
have come out of the pipeline: its files (one per table) are published (temporary name, then rename), then the
manifest is rewritten; the manifest rewrite is the single atomic commit step. Readers and resume trust
only shards the manifest lists, and reopening an output deletes files no manifest entry owns, so an
interrupted commit is simply redone. Rows of a shard are deduplicated by input_id before commit, so a
retried replica batch cannot produce a row twice. Each file's checksum goes into its manifest entry, and
`read_committed` (what export, train and inspect read) checks each file against it, and its row count, as it
reads it: a file changed after its commit is refused, never handed on.

The generate stage writes shards on the workers (s2d.engine.data.shard_tasks), under hidden staged names scoped by
the job's lease fence, and the driver, holding the lease at its epoch, renames them into place and commits them
(s2d.engine.data.commits): a replaced job's late writes never become visible. `ShardWriter` is the same mechanism
in one process (tests, benchmarks, small tools): both make a shard's tables with `shard_tables`. The writer takes
curated rows as Arrow tables (CURATED_SCHEMA) and works on whole columns: splitting a batch by shard, counting,
deduplicating and selecting by status are array operations, so a job of millions of inputs spends no Python per
row here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.votes import ANSWER_COUNTS_TYPE
from s2d.engine.data.manifest import (
    Manifest,
    ShardEntry,
    open_manifest,
    read_manifest,
    shard_name,
    write_manifest,
)
from s2d.engine.data.ownership import is_owned_name
from s2d.engine.data.samples import SAMPLES, SAMPLES_COLUMN, SAMPLES_SCHEMA, flatten_samples
from s2d.engine.data.storage import OutputLocation

ACCEPTED_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("shard_id", pa.int32()),
        ("prompt", pa.string()),
        ("answer", pa.string()),
        ("votes", pa.int64()),
        ("num_samples", pa.int64()),
        ("agreement", pa.float64()),
        ("method", pa.string()),
        ("model", pa.string()),
        ("system2_tokens", pa.float64()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("shard_id", pa.int32()),
        ("prompt", pa.string()),
        ("criterion", pa.string()),  # the consistency criterion that rejected the input
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("answer_counts", ANSWER_COUNTS_TYPE),  # the answer distribution the criterion saw, most votes first
        ("num_samples", pa.int64()),
        ("method", pa.string()),
        ("model", pa.string()),
        ("system2_tokens", pa.float64()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("shard_id", pa.int32()),
        ("source_row", pa.int64()),  # row number in the user's file; null for built-in tasks
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),  # a bounded repr of the offending value, for the user to find and fix it
        ("method", pa.string()),
        ("model", pa.string()),
    ]
)

KINDS = {
    "shards": ("accepted", ACCEPTED_SCHEMA),
    "rejected": ("rejected", REJECTED_SCHEMA),
    "quarantine": ("quarantined", QUARANTINE_SCHEMA),
}
STATUSES = pa.array([status for status, _ in KINDS.values()])
# What curation hands the writer: every input's row, whatever its fate, with the columns of all three kinds,
# and its samples (a list per generated input, written to the samples table).
CURATED_SCHEMA = pa.schema(
    [("status", pa.string())]
    + list({f.name: f for schema in (ACCEPTED_SCHEMA, REJECTED_SCHEMA, QUARANTINE_SCHEMA) for f in schema}.values())
    + [SAMPLES_COLUMN]
)
# Every table of a shard, by folder: the three that split the inputs, and the samples.
TABLE_SCHEMAS = {kind: schema for kind, (_, schema) in KINDS.items()} | {SAMPLES: SAMPLES_SCHEMA}
STAGING = ".staging"
PARTS = ".parts"  # curated rows of uncommitted shards, written by the workers (s2d.engine.data.shard_tasks)


def num_shards_for(num_inputs: int, inputs_per_shard: int) -> int:
    return max(1, math.ceil(num_inputs / inputs_per_shard))


def shard_of(input_id: str, num_shards: int) -> int:
    """Stable across runs, machines and cluster sizes: a function of the input_id and the shard count only."""
    return int(hashlib.sha256(input_id.encode()).hexdigest()[:12], 16) % num_shards


def spec_fingerprint(generation_relevant: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(generation_relevant, sort_keys=True).encode()).hexdigest()[:16]


def curated_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Curated rows given one by one (a quarantined input, a per-row criterion) as a table for the writer;
    columns a row lacks are null."""
    return pa.Table.from_pylist(list(rows), schema=CURATED_SCHEMA)


@dataclass
class ShardWriter:
    """Collects curated rows (status accepted / rejected / quarantined), commits each shard when it is complete.

    A shard is complete when it has received as many distinct input_ids as it has inputs; rows of a
    shard already complete are copies from a retried batch and are dropped, as are repeats within a shard.
    Memory stays bounded: when more than `max_buffered_rows` rows wait for their shards to complete, the
    largest pending shards are spilled to part files under .staging/ and read back at commit.
    """

    location: OutputLocation
    num_shards: int
    fingerprint: str
    expected: dict[int, int]  # inputs per shard, for shards not yet committed
    manifest: Manifest
    max_buffered_rows: int = 50_000
    keep_samples: bool = False  # also write each shard's samples table (from the curated rows' samples column)
    duplicates_dropped: int = 0
    _buffered: dict[int, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    _buffered_rows: int = 0
    _staged_parts: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    _received_ids: dict[int, list[pa.ChunkedArray]] = field(default_factory=lambda: defaultdict(list))
    _received: dict[int, int] = field(default_factory=Counter)  # rows per pending shard, repeats included

    @classmethod
    def open(
        cls,
        out: Any,
        num_shards: int,
        fingerprint: str,
        expected: dict[int, int],
        force: bool = False,
        max_buffered_rows: int = 50_000,
        keep_samples: bool = False,
    ) -> ShardWriter:
        location = OutputLocation.of(out)
        manifest = open_output(location, num_shards, fingerprint, sum(expected.values()), force, keep_samples)
        remaining = {shard: count for shard, count in expected.items() if shard not in manifest.shards}
        writer = cls(location, num_shards, fingerprint, remaining, manifest, max_buffered_rows, keep_samples)
        # A shard no input hashes to: commit it empty so the manifest is complete.
        writer._commit([shard for shard, count in remaining.items() if count == 0])
        return writer

    @property
    def committed_shards(self) -> set[int]:
        return self.manifest.committed

    def add(self, curated: pa.Table) -> None:
        """Take a batch of curated rows (CURATED_SCHEMA) and commit the shards it completes, together."""
        if not curated.num_rows:
            return
        curated = curated.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
        self._check(curated)
        shard_ids = curated.column("shard_id").to_numpy()
        pending = np.isin(shard_ids, np.fromiter(self.expected, dtype=np.int64, count=len(self.expected)))
        if not pending.all():  # rows of a committed shard: copies from a retried batch
            self.duplicates_dropped += int((~pending).sum())
            curated, shard_ids = curated.filter(pa.array(pending)), shard_ids[pending]
        order = np.argsort(shard_ids, kind="stable")
        by_shard = curated.take(order)
        shards, starts, counts = np.unique(shard_ids[order], return_index=True, return_counts=True)
        complete = []
        for shard, start, count in zip(shards.tolist(), starts.tolist(), counts.tolist()):
            rows = by_shard.slice(start, count)
            self._buffered[shard].append(rows)
            self._received_ids[shard].append(rows.column("input_id"))
            self._received[shard] += count
            self._buffered_rows += count
            if self._received[shard] >= self.expected[shard] and self._is_complete(shard):
                complete.append(shard)
        self._commit(complete)
        if self._buffered_rows > self.max_buffered_rows:
            self._spill()

    def finish(self) -> Manifest:
        if self.expected:
            missing = sorted(self.expected)
            raise RuntimeError(f"{len(missing)} shards never completed (first: {missing[:5]}); rerun to resume")
        self.location.delete(STAGING)
        return self.manifest

    def _check(self, curated: pa.Table) -> None:
        shard_ids = curated.column("shard_id")
        stray = pc.or_(pc.less(shard_ids, 0), pc.greater_equal(shard_ids, self.num_shards))
        if pc.any(stray).as_py():
            row = curated.filter(stray).slice(0, 1).to_pylist()[0]
            raise RuntimeError(f"row {row['input_id']} belongs to shard {row['shard_id']}, which is not being produced")
        unknown = pc.invert(pc.is_in(curated.column("status"), value_set=STATUSES))
        if pc.any(unknown).as_py():
            row = curated.filter(unknown).slice(0, 1).to_pylist()[0]
            raise RuntimeError(f"row {row['input_id']} has unknown status {row['status']!r}")

    def _is_complete(self, shard: int) -> bool:
        distinct = pc.count_distinct(
            pa.chunked_array([chunk for ids in self._received_ids[shard] for chunk in ids.chunks], pa.string())
        ).as_py()
        if distinct > self.expected[shard]:
            raise RuntimeError(
                f"shard {shard}: more inputs than expected ({distinct} > {self.expected[shard]}); "
                "the input set changed during the job"
            )
        return distinct == self.expected[shard]

    def _spill(self) -> None:
        for shard in sorted(self._buffered, key=lambda s: sum(map(len, self._buffered[s])), reverse=True):
            rows = pa.concat_tables(self._buffered.pop(shard))
            self._buffered_rows -= rows.num_rows
            part = f"part-{len(self._staged_parts[shard]):05d}.parquet"
            self.location.makedirs(STAGING, f"shard-{shard:05d}")
            self.location.write_table_atomic(rows, STAGING, f"shard-{shard:05d}", part)
            self._staged_parts[shard].append(part)
            if self._buffered_rows <= self.max_buffered_rows // 2:
                break

    def _commit(self, shards: list[int]) -> None:
        """Publish the files of complete shards, then commit them all with one manifest rewrite."""
        if not shards:
            return
        prepared = {shard: self._files(shard) for shard in shards}
        checksums = iter(publish_files(self.location, [file for _, files in prepared.values() for file in files]))
        for shard, (entry, files) in prepared.items():
            entry = entry.model_copy(update={"checksums": {kind: next(checksums) for _, kind, _ in files}})
            self.manifest.shards[shard] = entry
            del self.expected[shard]
        write_manifest(self.location, self.manifest)  # the commit point
        for shard in shards:
            self.location.delete(STAGING, f"shard-{shard:05d}")

    def _files(self, shard: int) -> tuple[ShardEntry, list[tuple[pa.Table, str, str]]]:
        """A complete shard's manifest entry, and its tables with where each goes."""
        parts = [
            self.location.read_table(STAGING, f"shard-{shard:05d}", part, schema=CURATED_SCHEMA)
            for part in self._staged_parts.pop(shard, [])
        ]
        buffered = self._buffered.pop(shard, [])
        self._buffered_rows -= sum(map(len, buffered))
        rows = _first_of_each_input(
            pa.concat_tables(parts + buffered) if parts or buffered else CURATED_SCHEMA.empty_table()
        )
        self.duplicates_dropped += self._received.pop(shard, 0) - rows.num_rows
        self._received_ids.pop(shard, None)
        return shard_tables(shard, rows, self.keep_samples)


def shard_tables(shard: int, rows: pa.Table, keep_samples: bool) -> tuple[ShardEntry, list[tuple[pa.Table, str, str]]]:
    """A complete shard's curated rows (one per input) -> its manifest entry (counts), and each of its tables
    (accepted, rejected, quarantined, samples) with where it goes. The one way a shard's files are made: the
    driver's ShardWriter and the workers' shard tasks (s2d.engine.data.shard_tasks) both use it."""
    file = shard_name(shard)
    files, counts = [], {}
    for kind, (status, schema) in KINDS.items():
        selected = rows.filter(pc.equal(rows.column("status"), status)).select(schema.names).cast(schema)
        files.append((selected, kind, file))
        counts[status] = selected.num_rows
    if keep_samples:
        samples = flatten_samples(rows)
        files.append((samples, SAMPLES, file))
        counts[SAMPLES] = samples.num_rows
    return ShardEntry(file=file, **counts), files


def publish_files(location: OutputLocation, files: list[tuple[pa.Table, str, str]]) -> list[str]:
    """Write tables under temporary names and rename them in place; returns each file's checksum, in order
    (`OutputLocation.write_table_checksummed`, as the workers' shard tasks write theirs)."""
    if not files:
        return []
    # Parquet encoding, hashing and fsync release the GIL: the files are written side by side.
    with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda file: location.write_table_checksummed(*file), files))


def open_output(
    location: OutputLocation, num_shards: int, fingerprint: str, num_inputs: int, force: bool, keep_samples: bool
) -> Manifest:
    """Open `<out>` for this job: its manifest (s2d.engine.data.manifest.open_manifest: refused when `<out>` is not
    s2d's or holds another job's output, unless `force`), then its table folders, from which what no commit owns
    (files of an interrupted commit, staged parts) is deleted, and only files whose names s2d gives. The manifest
    is written first: a forced restart commits its empty manifest before the old shards' files go."""
    manifest = open_manifest(location, num_shards, fingerprint, num_inputs, force, keep_samples)
    _discard_uncommitted(location, manifest)
    for kind in _tables(manifest):
        location.makedirs(kind)
    return manifest


def _first_of_each_input(rows: pa.Table) -> pa.Table:
    """The rows in order, keeping only the first row of each input_id (a retried batch repeats rows)."""
    codes = pc.dictionary_encode(rows.column("input_id").combine_chunks()).indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    return rows if len(first) == rows.num_rows else rows.take(np.sort(first))


def _discard_uncommitted(location: OutputLocation, manifest: Manifest) -> None:
    """Delete what an interrupted run left behind: staged parts, temporary files, shard files of no commit. Only
    s2d's own names: a file it did not write stays, even in a table folder."""
    location.delete(STAGING)
    location.delete(PARTS)
    committed = {entry.file for entry in manifest.shards.values()}
    for kind in TABLE_SCHEMAS:
        for name in location.list_files(kind):
            if name not in committed and is_owned_name(name):
                location.delete(kind, name)


def _tables(manifest: Manifest) -> list[str]:
    """The table folders of an output: the three kinds, and samples when the job keeps them."""
    return list(KINDS) + ([SAMPLES] if manifest.keep_samples else [])


def committed_rows(entry: ShardEntry, kind: str) -> int | None:
    """The rows the manifest says a shard's file of `kind` holds (None: not recorded)."""
    return entry.samples if kind == SAMPLES else getattr(entry, KINDS[kind][0])


def read_committed_file(
    location: OutputLocation, kind: str, entry: ShardEntry, schema: pa.Schema | None = None
) -> pa.Table:
    """A committed file's rows, verified against its manifest entry (checksum, when recorded, and row count)
    before they are handed on; AlteredFile, one line naming the file and why, when it is not what was committed."""
    recorded = (entry.checksums or {}).get(kind)
    return location.read_table_verified(kind, entry.file, schema=schema, sha=recorded, rows=committed_rows(entry, kind))


def read_committed(
    out: Any, kind: str = "shards", columns: list[str] | None = None, shards: Iterable[int] | None = None
) -> pa.Table:
    """All committed rows of `kind` (shards, rejected, quarantine or samples), reading only files the manifest
    lists (only those of `shards`, when given), each verified as it is read (`read_committed_file`: AlteredFile
    when it is not what was committed). An output that kept no samples has an empty samples table."""
    location = OutputLocation.of(out)
    schema = TABLE_SCHEMAS[kind]
    if columns:
        schema = pa.schema([schema.field(name) for name in columns])
    manifest = read_manifest(location)
    entries = list(manifest.shards.values()) if manifest and kind in _tables(manifest) else []
    if shards is not None:
        wanted = {shard_name(shard) for shard in shards}
        entries = [entry for entry in entries if entry.file in wanted]
    tables = [read_committed_file(location, kind, entry, schema) for entry in entries]
    return pa.concat_tables(tables) if tables else schema.empty_table()
