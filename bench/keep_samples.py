"""What keeping every System 2 sample costs: the demo job's generate stage with output.keep_samples off, then on.

    .venv/bin/python bench/keep_samples.py                      # ~8 minutes on the 2-core CPU machine
    .venv/bin/python bench/keep_samples.py task.num_inputs=32   # job overrides: a smaller run

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
    subprocess.run([sys.executable, "-m", "engine.cli", "generate", str(ROOT / "configs" / "demo.yaml"),
                    f"out={out}", f"output.keep_samples={str(keep).lower()}", "--no-progress", *extra],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    metrics = json.loads((out / "metrics.json").read_text())
    result = {"keep_samples": keep, "wall_s": round(wall, 1), "samples": metrics["samples"],
              **{name: round(seconds, 2) for name, seconds in metrics["stage_seconds"].items()},
              **{f"{table}_bytes": folder_bytes(out / table) for table in TABLES}}
    if keep:
        from engine.shards import read_committed

        result["samples_arrow_bytes"] = read_committed(out, "samples").nbytes
    return result


def main() -> None:
    extra = sys.argv[1:]  # job overrides, e.g. task.num_inputs=32
    results = [run(False, extra), run(True, extra)]
    for result in results:
        print(json.dumps(result))
    off, on = results
    inputs_bytes = sum(off[f"{table}_bytes"] for table in TABLES)
    print(f"keep_samples on vs off: generate {on['wall_s']:.1f} s vs {off['wall_s']:.1f} s "
          f"({on['wall_s'] / off['wall_s'] - 1:+.1%}); curate {on['curate (in Ray tasks)']:.2f} s vs "
          f"{off['curate (in Ray tasks)']:.2f} s; commit {on['shard commit + accounting (driver)']:.2f} s vs "
          f"{off['shard commit + accounting (driver)']:.2f} s; samples/ {on['samples_bytes'] / 1024:.0f} KiB on disk "
          f"({on['samples']} samples, {on['samples_bytes'] / on['samples']:.0f} B each; the other tables "
          f"{inputs_bytes / 1024:.0f} KiB), {on['samples_arrow_bytes'] / 1024:.0f} KiB in memory")


if __name__ == "__main__":
    main()
