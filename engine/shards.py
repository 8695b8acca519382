"""Parquet shards: deterministic partitioning, per-shard commit, and the manifest that records what is done.

Layout under <out>/:
  shards/shard-00003.parquet     accepted inputs of shard 3 (ACCEPTED_SCHEMA)
  rejected/shard-00003.parquet   inputs of shard 3 that failed self-consistency (REJECTED_SCHEMA)
  manifest.json                  committed shards with counts, the spec fingerprint; written last

A shard is committed once all its inputs are curated: both files are written under temporary names,
renamed into place, then the manifest is rewritten atomically. The manifest is the commit record:
readers and resume trust only shards it lists.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

ACCEPTED_SCHEMA = pa.schema([
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
])

REJECTED_SCHEMA = pa.schema([
    ("input_id", pa.string()),
    ("shard_id", pa.int32()),
    ("prompt", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("answer_counts", pa.string()),
    ("num_samples", pa.int64()),
    ("method", pa.string()),
    ("model", pa.string()),
    ("system2_tokens", pa.float64()),
])

MANIFEST = "manifest.json"


class OutputConflict(RuntimeError):
    """<out> holds the output of a different job spec."""


def num_shards_for(num_inputs: int, inputs_per_shard: int) -> int:
    return max(1, math.ceil(num_inputs / inputs_per_shard))


def shard_of(input_id: str, num_shards: int) -> int:
    """Stable across runs, machines and cluster sizes: input_id is a hex digest (engine.tasks.make_input_id)."""
    return int(hashlib.sha256(input_id.encode()).hexdigest()[:12], 16) % num_shards


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.parquet"


def spec_fingerprint(generation_relevant: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(generation_relevant, sort_keys=True).encode()).hexdigest()[:16]


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


@dataclass
class ShardWriter:
    """Collects curated rows, commits each shard when its last expected input arrives."""

    out: Path
    num_shards: int
    fingerprint: str
    expected: dict[int, int]  # inputs still to commit, per shard
    manifest: dict[str, Any]
    _pending: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def open(cls, out: Path, num_shards: int, fingerprint: str, expected: dict[int, int], force: bool = False) -> "ShardWriter":
        out.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(out)
        if manifest and not force and (manifest["fingerprint"] != fingerprint or manifest["num_shards"] != num_shards):
            raise OutputConflict(
                f"{out} holds output of a different job spec (fingerprint {manifest['fingerprint']}, "
                f"this job {fingerprint}); choose another `out` or pass --force to discard it"
            )
        if not manifest or force:
            for sub in ("shards", "rejected"):
                for stale in (out / sub).glob("*.parquet") if (out / sub).exists() else ():
                    stale.unlink()
            manifest = {"fingerprint": fingerprint, "num_shards": num_shards, "shards": {}}
        (out / "shards").mkdir(exist_ok=True)
        (out / "rejected").mkdir(exist_ok=True)
        committed = {int(shard) for shard in manifest["shards"]}
        remaining = {shard: count for shard, count in expected.items() if shard not in committed}
        writer = cls(out, num_shards, fingerprint, remaining, manifest)
        for shard, count in list(remaining.items()):
            if count == 0:  # a shard no input hashes to: commit it empty so the manifest is complete
                writer._commit(shard)
        return writer

    @property
    def committed_shards(self) -> set[int]:
        return {int(shard) for shard in self.manifest["shards"]}

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        touched = set()
        for row in rows:
            shard = int(row["shard_id"])
            if shard not in self.expected:
                raise RuntimeError(f"row {row['input_id']} belongs to shard {shard}, which is not being produced")
            self._pending[shard].append(row)
            touched.add(shard)
        for shard in touched:
            if len(self._pending[shard]) > self.expected[shard]:
                raise RuntimeError(f"shard {shard}: more rows than inputs ({len(self._pending[shard])} > {self.expected[shard]})")
            if len(self._pending[shard]) == self.expected[shard]:
                self._commit(shard)

    def _commit(self, shard: int) -> None:
        rows = self._pending.pop(shard, [])
        ids = [row["input_id"] for row in rows]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"shard {shard}: duplicate input_id in curated rows")
        accepted = [row for row in rows if row["status"] == "accepted"]
        rejected = [row for row in rows if row["status"] != "accepted"]
        name = shard_name(shard)
        _write_table_atomic(_table(accepted, ACCEPTED_SCHEMA), self.out / "shards" / name)
        _write_table_atomic(_table(rejected, REJECTED_SCHEMA), self.out / "rejected" / name)
        self.manifest["shards"][str(shard)] = {"file": name, "accepted": len(accepted), "rejected": len(rejected)}
        del self.expected[shard]
        self._write_manifest()

    def _write_manifest(self) -> None:
        shards = self.manifest["shards"]
        self.manifest["counts"] = {
            "accepted": sum(entry["accepted"] for entry in shards.values()),
            "rejected": sum(entry["rejected"] for entry in shards.values()),
            "committed_shards": len(shards),
        }
        self.manifest["shards"] = dict(sorted(shards.items(), key=lambda item: int(item[0])))
        _write_atomic_bytes(self.out / MANIFEST, json.dumps(self.manifest, indent=2).encode())

    def finish(self) -> dict[str, Any]:
        if self.expected:
            missing = sorted(self.expected)
            raise RuntimeError(f"{len(missing)} shards never completed (first: {missing[:5]}); rerun to resume")
        return self.manifest


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def read_committed(out: Path, kind: str = "shards") -> pa.Table:
    """All committed rows of `kind` (shards or rejected), reading only files the manifest lists."""
    manifest = read_manifest(out)
    schema = ACCEPTED_SCHEMA if kind == "shards" else REJECTED_SCHEMA
    if not manifest:
        return schema.empty_table()
    tables = [pq.read_table(Path(out) / kind / entry["file"], schema=schema) for entry in manifest["shards"].values()]
    return pa.concat_tables(tables) if tables else schema.empty_table()
