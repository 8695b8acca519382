"""What keeping every System 2 sample costs: the demo job's generate stage with output.keep_samples off, then on.

    .venv/bin/python bench/keep_samples.py                      # ~8 minutes on the 2-core CPU machine
    .venv/bin/python bench/keep_samples.py task.num_inputs=32   # job overrides: a smaller run
    .venv/bin/python bench/keep_samples.py --work-only OUT      # seconds: only the work keep_samples adds

`--work-only OUT` takes the samples of a finished job in OUT and times, with and without them, what the
samples add to a job besides generation itself: the replica's packing of each chain into the Arrow contract,
curation (answers into sample rows) and the shard write, on that job's real texts repeated `--copies` times.

Each run is `s2d generate configs/demo.yaml` in its own process (its own embedded Ray, as a user runs it). Reports
the stage's wall time, the curate time summed over its Ray tasks and the driver's commit time (where the
samples' extra work happens: answers turned into sample rows, the samples file written), the bytes of each
table on disk, and the samples' Arrow size in memory (what travels from the replicas to the driver on top of
the inputs' rows). The last line is the headline: the relative cost in time and bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
TABLES = ("shards", "rejected", "quarantine", "samples")


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.glob("*.parquet")) if path.is_dir() else 0


def run(keep: bool, extra: list[str]) -> dict:
    out = ROOT / "runs" / f"bench-keep-samples-{'on' if keep else 'off'}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "s2d.engine.cli",
            "generate",
            str(ROOT / "configs" / "demo.yaml"),
            f"out={out}",
            f"output.keep_samples={str(keep).lower()}",
            "--no-progress",
            *extra,
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.monotonic() - started
    metrics = json.loads((out / "metrics.json").read_text())
    result = {
        "keep_samples": keep,
        "wall_s": round(wall, 1),
        "samples": metrics["samples"],
        **{name: round(seconds, 2) for name, seconds in metrics["stage_seconds"].items()},
        **{f"{table}_bytes": folder_bytes(out / table) for table in TABLES},
    }
    if keep:
        from s2d.engine.data.shards import read_committed

        result["samples_arrow_bytes"] = read_committed(out, "samples").nbytes
    return result


def work_only(out: Path, copies: int) -> None:
    from s2d.engine.core.criteria import GeneratedInput
    from s2d.engine.core.program import Chain
    from s2d.engine.core.spec import load_spec
    from s2d.engine.data.curation import curate_generated
    from s2d.engine.data.generated import pack_generated
    from s2d.engine.data.shards import ShardWriter, read_committed

    spec = load_spec(out / "job.yaml")
    samples = read_committed(out, "samples").to_pylist()
    by_input: dict[str, list] = {}
    for sample in samples:
        by_input.setdefault(sample["input_id"], []).append(sample)
    chains = [
        [Chain({step["name"]: step["text"] for step in s["steps"]}, s["tokens"]) for s in per_input]
        for per_input in by_input.values()
    ] * copies
    rows = [{"input_id": f"{i}", "shard_id": 0, "prompt": "p"} for i in range(len(chains))]
    generated_inputs = [GeneratedInput([per_input]) for per_input in chains]
    kwargs = dict(task=spec.task.name, method=spec.method.name, model=spec.model, threshold=spec.curate.threshold)
    results: dict[bool, dict] = {}
    for _ in range(3):  # alternating rounds; the fastest of each counts (the first pays imports and caches)
        for keep in (False, True):
            started = time.perf_counter()
            generated = pack_generated(rows, generated_inputs, keep)  # the replica's side of the contract
            pack_s = time.perf_counter() - started
            target = out.parent / f"{out.name}-work-{'on' if keep else 'off'}"
            shutil.rmtree(target, ignore_errors=True)
            started = time.perf_counter()
            curated = curate_generated(generated, **kwargs)
            curate_s = time.perf_counter() - started
            started = time.perf_counter()
            writer = ShardWriter.open(target, 1, "bench", {0: len(chains)}, keep_samples=keep)
            writer.add(curated)
            writer.finish()
            write_s = time.perf_counter() - started
            best = results.get(keep, {"pack_s": float("inf"), "curate_s": float("inf"), "write_s": float("inf")})
            results[keep] = {
                "pack_s": min(pack_s, best["pack_s"]),
                "curate_s": min(curate_s, best["curate_s"]),
                "write_s": min(write_s, best["write_s"]),
                "generated_bytes": generated.nbytes,
                "curated_bytes": curated.nbytes,
                "disk_bytes": sum(folder_bytes(target / table) for table in TABLES),
            }
    for keep, result in results.items():
        print(json.dumps({"keep_samples": keep, "inputs": len(chains), **result}))
    off, on = results[False], results[True]
    added = sum(on[key] - off[key] for key in ("pack_s", "curate_s", "write_s"))
    print(
        f"keep_samples work on {len(chains)} inputs x {len(chains[0])} samples: +{added:.3f} s CPU "
        f"(replica packing {on['pack_s']:.3f} vs {off['pack_s']:.3f} s, curate {on['curate_s']:.3f} vs "
        f"{off['curate_s']:.3f} s, write {on['write_s']:.3f} vs {off['write_s']:.3f} s) = "
        f"{added / len(chains) * 1000:.2f} ms per input; "
        f"replica->curation {on['generated_bytes'] / off['generated_bytes']:.2f}x bytes, curation->driver "
        f"{on['curated_bytes'] / off['curated_bytes']:.1f}x, on disk {on['disk_bytes'] / off['disk_bytes']:.1f}x "
        f"({on['disk_bytes'] - off['disk_bytes']} bytes more)"
    )


def main() -> None:
    if sys.argv[1:2] == ["--work-only"]:
        copies = int(sys.argv[sys.argv.index("--copies") + 1]) if "--copies" in sys.argv else 100
        work_only(Path(sys.argv[2]), copies)
        return
    extra = sys.argv[1:]  # job overrides, e.g. task.num_inputs=32
    results = [run(False, extra), run(True, extra)]
    for result in results:
        print(json.dumps(result))
    off, on = results
    inputs_bytes = sum(off[f"{table}_bytes"] for table in TABLES)
    print(
        f"keep_samples on vs off: generate {on['wall_s']:.1f} s vs {off['wall_s']:.1f} s "
        f"({on['wall_s'] / off['wall_s'] - 1:+.1%}); curate {on['curate (in Ray tasks)']:.2f} s vs "
        f"{off['curate (in Ray tasks)']:.2f} s; commit {on['shard commit + accounting (driver)']:.2f} s vs "
        f"{off['shard commit + accounting (driver)']:.2f} s; samples/ {on['samples_bytes'] / 1024:.0f} KiB on disk "
        f"({on['samples']} samples, {on['samples_bytes'] / on['samples']:.0f} B each; the other tables "
        f"{inputs_bytes / 1024:.0f} KiB), {on['samples_arrow_bytes'] / 1024:.0f} KiB in memory"
    )


if __name__ == "__main__":
    main()
