"""Issue 26's slow-replica bar, over several pairs: job time with one healthy and one 10x-slow replica, against the
same job on the healthy replica alone.

    .venv/bin/python bench/slow_replica.py              # 5 pairs, ~4 minutes on 2 cores (6 with --control)
    .venv/bin/python bench/slow_replica.py --control    # each pair also runs the pool without re-issuing

The job and the slow replica are tests/slow_replica_scene.py's (as test_slow_replica runs them): 12 one-input
batches of the packaged model, re-issuing on (generation.straggler_factor=3), job time from the last engine ready to
the job's end. One Ray for all jobs; each pair runs the pool first (the healthy replica alone then runs on the Ray
workers the pool warmed: the stricter order), then the healthy replica alone. One 3-second job on two cores
takes 2.7-3.8 s from one run to the next, so the bar is read on the medians; every pair's ratio is printed.
Prints one JSON line per pair; the last line is the median ratio and its bar.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import slow_replica_scene  # noqa: E402 - after the path set-up
from slow_replica_scene import MAX_RATIO, NUM_INPUTS, POOL, slow_replica_class, timed_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--control", action="store_true", help="also the pool without re-issuing, each pair")
    args = parser.parse_args()

    import ray.cloudpickle as cloudpickle

    import s2d.engine.stages.replica_pool
    from s2d.cluster.connect import connect

    cloudpickle.register_pickle_by_value(slow_replica_scene)  # Ray's workers cannot import it
    s2d.engine.stages.replica_pool.replica_class = slow_replica_class
    ray = connect(address=None)
    jobs: dict[str, list[float]] = {"pool": [], "alone": [], "control": []}
    with tempfile.TemporaryDirectory(prefix="s2d-bench-slow-") as scratch:
        for pair in range(args.pairs):
            runs = [("pool", POOL, True, ())]
            if args.control:
                runs.append(("control", POOL, True, ("generation.straggler_factor=null",)))
            runs.append(("alone", 1, False, ()))
            figures = {"pair": pair + 1}
            for name, replicas, one_slow, overrides in runs:
                job = timed_job(ray, Path(scratch) / f"{name}-{pair}", replicas, one_slow, *overrides)
                assert job["summary_inputs"] == NUM_INPUTS, job
                jobs[name].append(job["job_s"])
                figures[name] = {key: job[key] for key in ("job_s", "reissued", "won", "timeline")}
            figures["ratio"] = round(figures["pool"]["job_s"] / figures["alone"]["job_s"], 3)
            print(json.dumps(figures), flush=True)
    ray.shutdown()
    ratios = [pool / alone for pool, alone in zip(jobs["pool"], jobs["alone"], strict=True)]
    median = {name: statistics.median(times) for name, times in jobs.items() if times}
    summary = {
        "median_job_s": {name: round(seconds, 2) for name, seconds in median.items()},
        "pair_ratios": [round(ratio, 3) for ratio in ratios],
        "median_ratio": round(median["pool"] / median["alone"], 3),
        "bar": MAX_RATIO,
    }
    if "control" in median:
        summary["control_median_ratio"] = round(median["control"] / median["alone"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
