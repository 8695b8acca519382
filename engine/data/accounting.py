"""The exactly-once check of an output, one shard at a time: memory bounded by a shard, never the job.

Every input hashes to one shard, so "each input in exactly one of shards/, rejected/, quarantine/" is a
per-shard property plus one global sum: within each shard, the ids of its three tables are distinct and
their count is the shard's; the generated (accepted, rejected) ids hash to the shard they are in, so no id
can also sit in another shard's generated tables (one that does not is looked up where it belongs, and
reported as an input in two places when found there); and the shards' counts sum to the job's inputs.
A quarantined row may sit outside its id's shard (a duplicate keeps the shard of the input it repeats,
under the id of its row number), so it is checked within its shard only.

The generate stage runs this check on the workers as each shard is written (s2d.engine.data.shard_tasks) and sums
the results; `s2d status` reruns it over the committed files, shard by shard, and verifies each file as it reads
it (s2d.engine.data.shards.read_committed_file: its checksum in the manifest, when recorded, and its row count): a
file changed after its commit is one problem line naming it, and its rows count for nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.data.manifest import Manifest, read_manifest
from s2d.engine.data.ownership import MANIFEST
from s2d.engine.data.samples import SAMPLES, sample_count_problems
from s2d.engine.data.shards import KINDS, TABLE_SCHEMAS, read_committed_file, shard_of
from s2d.engine.data.storage import AlteredFile, OutputLocation


@dataclass(frozen=True)
class Accounting:
    """Where every input went. `ok` is the exactly-once invariant of a finished job."""

    num_inputs: int
    total_shards: int
    committed_shards: int
    counts: dict[str, int]
    duplicated_ids: list[str]
    samples: int | None = None  # committed sample rows; None when the job keeps no samples
    sample_problems: list[str] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)  # committed files that fail verification, one line each
    unchecksummed_files: int = 0  # committed files with no checksum in the manifest: verified by row count only

    @property
    def complete(self) -> bool:
        return self.committed_shards == self.total_shards

    @property
    def ok(self) -> bool:
        return (
            self.complete
            and not self.duplicated_ids
            and not self.sample_problems
            and not self.file_problems
            and sum(self.counts.values()) == self.num_inputs
        )

    def problems(self) -> list[str]:
        found = list(self.file_problems)
        if not self.complete:
            found.append(f"{self.total_shards - self.committed_shards} of {self.total_shards} shards not committed")
        if self.duplicated_ids:
            found.append(
                f"{len(self.duplicated_ids)} input_ids appear more than once (first: {self.duplicated_ids[0]})"
            )
        # A bad file's rows are not counted: the shortfall it makes is its line above, not another one.
        if self.complete and not self.file_problems and sum(self.counts.values()) != self.num_inputs:
            found.append(f"{sum(self.counts.values())} rows committed for {self.num_inputs} inputs")
        return found + self.sample_problems


@dataclass
class ShardCheck:
    """One shard's part of the accounting."""

    counts: dict[str, int]
    duplicated_ids: list[str]
    misplaced_ids: list[str]  # generated ids that hash to another shard
    samples: int | None = None
    sample_problems: list[str] = field(default_factory=list)


def check_shard_tables(
    shard: int, num_shards: int, tables: dict[str, pa.Table], samples: pa.Table | None
) -> ShardCheck:
    """`tables`: the shard's rows by kind (at least input_id; num_samples for shards and rejected);
    `samples`: its samples table (input_id, variant, sample), or None when the job keeps none."""
    counts = {status: tables[kind].num_rows for kind, (status, _) in KINDS.items()}
    ids = pa.chunked_array([chunk for kind in KINDS for chunk in tables[kind].column("input_id").chunks], pa.string())
    duplicated: list[str] = []
    if ids.length() and pc.count_distinct(ids).as_py() != ids.length():
        found = pa.table({"input_id": ids}).group_by("input_id").aggregate([("input_id", "count")])
        duplicated = sorted(found.filter(pc.greater(found.column("input_id_count"), 1)).column("input_id").to_pylist())
    generated = [i for kind in ("shards", "rejected") for i in tables[kind].column("input_id").to_pylist()]
    misplaced = [i for i in generated if shard_of(i, num_shards) != shard]
    check = ShardCheck(counts, duplicated, misplaced)
    if samples is not None:
        inputs = pa.concat_tables([tables[kind].select(["input_id", "num_samples"]) for kind in ("shards", "rejected")])
        check.samples, check.sample_problems = samples.num_rows, sample_count_problems(inputs, samples)
    return check


def check_accounting(out: Any, threads: int = 4) -> Accounting:
    """Read the committed files shard by shard, each verified as it is read, and check that each input is in
    exactly one place and, when the job keeps samples, that each generated input has its num_samples samples
    exactly once. A file that fails verification is a file problem, and its rows count for nothing."""
    location = OutputLocation.of(out)
    manifest = read_manifest(location)
    if manifest is None:
        raise FileNotFoundError(f"{out} has no {MANIFEST}: not the output of `s2d generate`")
    num_shards = manifest.num_shards
    keep_samples = manifest.keep_samples

    def check(shard: int) -> tuple[ShardCheck, list[str]]:
        entry = manifest.shards[shard]
        problems: list[str] = []

        def read(kind: str, columns: list[str]) -> pa.Table:
            schema = _schema(kind, columns)
            try:
                return read_committed_file(location, kind, entry, schema)
            except AlteredFile as problem:
                problems.append(str(problem))
                return schema.empty_table()

        columns = {"shards": ["input_id", "num_samples"], "rejected": ["input_id", "num_samples"]}
        tables = {kind: read(kind, columns.get(kind, ["input_id"])) for kind in KINDS}
        samples = read(SAMPLES, ["input_id", "variant", "sample"]) if keep_samples else None
        return check_shard_tables(shard, num_shards, tables, samples), problems

    shards = sorted(manifest.shards)
    counts = {status: 0 for status, _ in KINDS.values()}
    duplicated: set[str] = set()
    misplaced: list[tuple[str, int]] = []
    samples = 0 if keep_samples else None
    sample_problems: list[str] = []
    file_problems: list[str] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for shard, (result, problems) in zip(shards, pool.map(check, shards)):
            file_problems += problems
            for status, count in result.counts.items():
                counts[status] += count
            duplicated.update(result.duplicated_ids)
            misplaced.extend((input_id, shard) for input_id in result.misplaced_ids)
            if samples is not None:
                samples += result.samples or 0
                if not problems:  # a bad file's missing rows are its own line, not a samples problem too
                    sample_problems += [f"shard {shard}: {problem}" for problem in result.sample_problems]
    duplicated.update(_found_elsewhere(location, manifest, misplaced))
    tables = list(KINDS) + ([SAMPLES] if keep_samples else [])
    unchecksummed = sum(kind not in (entry.checksums or {}) for entry in manifest.shards.values() for kind in tables)
    return Accounting(
        manifest.num_inputs,
        num_shards,
        len(manifest.shards),
        counts,
        sorted(duplicated),
        samples,
        sample_problems,
        file_problems,
        unchecksummed,
    )


def _schema(kind: str, columns: list[str]) -> pa.Schema:
    schema = TABLE_SCHEMAS[kind]
    return pa.schema([schema.field(name) for name in columns])


def _found_elsewhere(location: OutputLocation, manifest: Manifest, misplaced: list[tuple[str, int]]) -> set[str]:
    """Misplaced generated ids (a broken partitioning) that are also in the shard they hash to."""
    found = set()
    by_home: dict[int, set[str]] = {}
    for input_id, _ in misplaced:
        by_home.setdefault(shard_of(input_id, manifest.num_shards), set()).add(input_id)
    for home, ids in by_home.items():
        if home not in manifest.shards:
            continue
        for kind in KINDS:
            try:  # a file that fails verification is already a file problem: its ids are not evidence
                present = read_committed_file(location, kind, manifest.shards[home], _schema(kind, ["input_id"]))
            except AlteredFile:
                continue
            found |= ids & set(present.column("input_id").to_pylist())
    return found


def accounting_from_entries(manifest: Manifest) -> Accounting:
    """The job's accounting as the sum of its shards' entries, each checked on the worker that wrote it."""
    totals = manifest.totals()
    counts = {"accepted": totals.accepted, "rejected": totals.rejected, "quarantined": totals.quarantined}
    return Accounting(manifest.num_inputs, manifest.num_shards, len(manifest.shards), counts, [], totals.samples, [])
