"""What verification costs on the read path: every committed file hashed and its rows counted before it is handed on.

    s2d-timed .venv/bin/python bench/verify_read.py                  # 100k inputs x 8 samples kept, ~1 minute
    .venv/bin/python bench/verify_read.py --out runs/demo            # an existing output instead (read only)

Builds a synthetic output with the driver-side `ShardWriter` (the rows `s2d generate` commits: accepted, rejected
and quarantined inputs, each generated input with its 8 samples of a two-step chain), unless `--out` names one.
Then, alternating the sides `--repeats` times on the same files (the page cache warm for both after the first
pass, which is not counted):
- plain: `pyarrow.parquet.read_table` of every committed file of shards/ and samples/, no check at all;
- verified: `read_committed` of the same tables (what `s2d export`, `s2d train`, `s2d inspect` and the card call:
  the file's bytes read once, SHA-256 over them, parsed from memory, rows counted against the manifest);
- status: `check_accounting` (what `s2d status` runs: every file of every table verified, the exactly-once check).
The last line is the headline: verified / plain, the cost of never handing on an altered file.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.manifest import read_manifest
from s2d.engine.data.shards import ShardWriter, curated_table, read_committed, shard_of

KINDS = ("shards", "samples")
SAMPLES = 8


def build_output(out: Path, inputs: int, shards: int) -> None:
    """A committed output of `inputs` inputs: one in eight accepted, one in a hundred quarantined, the rest
    rejected; every generated input keeps its samples."""
    ids = [f"input-{index:07d}" for index in range(inputs)]
    shard = {input_id: shard_of(input_id, shards) for input_id in ids}
    expected = {number: 0 for number in range(shards)}
    for number in shard.values():
        expected[number] += 1
    writer = ShardWriter.open(out, shards, "bench", expected, keep_samples=True)
    noise = random.Random(0)  # text that compresses like real chains, not like one repeated string
    batch = []
    for index, input_id in enumerate(ids):
        status = "quarantined" if index % 100 == 0 else "accepted" if index % 8 == 1 else "rejected"
        answer = "ab" if status == "accepted" else None
        samples = [
            {
                "variant": None,
                "sample": number,
                "steps": [
                    {"name": "rephrase", "item": None, "text": f"Which letter ends {noise.getrandbits(96):x}?"},
                    {"name": "respond", "item": None, "text": f"It is spelled {noise.getrandbits(160):x}. Answer: b"},
                ],
                "extracted": "b",
                "answer": "b",
                "tokens": 31,
            }
            for number in range(SAMPLES)
        ]
        batch.append(
            {
                "input_id": input_id,
                "shard_id": shard[input_id],
                "status": status,
                "prompt": f"What is the last letter of the word number {index}?",
                "answer": answer,
                "votes": 5,
                "agreement": 5 / SAMPLES,
                "criterion": "majority",
                "method": "rar2",
                "model": "smollm2-135m",
                "system2_tokens": 31.0,
                "answer_counts": [{"answer": "b", "votes": 5}],
                "reason": {"accepted": None, "rejected": "tie", "quarantined": "empty"}[status],
                "detail": "",
                "num_samples": 0 if status == "quarantined" else SAMPLES,
                "samples": None if status == "quarantined" else samples,
            }
        )
        if len(batch) == 4096:
            writer.add(curated_table(batch))
            batch = []
    if batch:
        writer.add(curated_table(batch))
    writer.finish()


def committed_paths(out: Path) -> list[Path]:
    manifest = read_manifest(out)
    return [out / kind / entry.file for entry in manifest.shards.values() for kind in KINDS]


def read_plain(out: Path) -> int:
    return sum(pq.read_table(path).num_rows for path in committed_paths(out))


def read_verified(out: Path) -> int:
    return sum(read_committed(out, kind).num_rows for kind in KINDS)


def run_status(out: Path) -> int:
    report = check_accounting(out)
    assert not report.problems(), report.problems()
    return report.committed_shards


def timed(function, out: Path) -> float:
    started = time.perf_counter()
    function(out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs of the synthetic output")
    parser.add_argument("--shards", type=int, default=64, help="its shards")
    parser.add_argument("--out", help="measure this existing output instead (only read)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s2d-verify-") as work:
        out = Path(args.out) if args.out else Path(work) / "out"
        if not args.out:
            started = time.perf_counter()
            build_output(out, args.inputs, args.shards)
            print(f"built {args.inputs:,} inputs in {args.shards} shards in {time.perf_counter() - started:.0f} s")
        size = sum(path.stat().st_size for path in committed_paths(out))
        rows = read_plain(out)  # warms the page cache for every side alike; not counted
        assert read_verified(out) == rows, "verified and plain reads must hand on the same rows"
        sides = {"plain": read_plain, "verified": read_verified, "status": run_status}
        seconds = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, function in sides.items():
                seconds[name].append(timed(function, out))
        print(f"{out}: {rows:,} rows of shards/ + samples/ in {size / 2**20:.1f} MiB, {args.repeats} repeats each")
        print("| read | median | min - max | MiB/s |")
        print("|---|---:|---:|---:|")
        for name, values in seconds.items():
            median = statistics.median(values)
            print(
                f"| {name} | {median:.3f} s | {min(values):.3f} - {max(values):.3f} s | {size / 2**20 / median:,.0f} |"
            )
        ratio = statistics.median(seconds["verified"]) / statistics.median(seconds["plain"])
        print(f"verified / plain: {ratio:.2f}x the unchecked read of the same files")


if __name__ == "__main__":
    main()
