"""Where a generation replica's start-up goes: Ray start, the actor, vLLM's engine processes, the first call.

    .venv/bin/python bench/replica_start.py                 # ~3 minutes on 2 cores
    .venv/bin/python bench/replica_start.py --modes spawn   # vLLM's default inside a Ray actor only

Each run is one fresh process (as `s2d generate` starts): `ray.init`, one `GenerationReplica` actor with the
job's engine settings (the packaged model, already converted), `ready()`, then one small System 1 batch (4
inputs, n=8, 32 tokens). Modes: `fork` (s2d's replica: vLLM forks its engine core and worker from the actor,
as it does in a plain script) and `spawn` (`VLLM_WORKER_MULTIPROC_METHOD=spawn` in the actor: each of the two
processes imports torch and vLLM afresh, vLLM's own choice inside a Ray actor). Prints each phase per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(mode: str) -> dict:
    started = time.perf_counter()
    import ray

    from actors.replica import RUNTIME_ENV, GenerationReplica
    from engine.pipeline import BATCHES_PER_REPLICA, input_rows
    from engine.spec import parse_spec

    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "out": "unused",
            "task": {"name": "last_letter", "num_inputs": 4, "seed": 0},
            "method": {"name": "system1"},
            "sampling": {"n": 8, "temperature": 0.7, "max_tokens": 32, "seed": 0},
        }
    )
    imported = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_started = time.perf_counter()
    env_vars = dict(RUNTIME_ENV["env_vars"])
    if mode == "spawn":
        env_vars["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    replica = (
        ray.remote(GenerationReplica)
        .options(num_cpus=1, max_concurrency=BATCHES_PER_REPLICA, runtime_env={"env_vars": env_vars})
        .remote(**GenerationReplica.for_job(spec))
    )
    ray.get(replica.ready.remote())
    ready = time.perf_counter()
    rows = list(input_rows(spec, num_shards=1))
    import pyarrow as pa

    result = ray.get(replica.__call__.remote(pa.Table.from_pylist(rows).to_pydict()))
    first = time.perf_counter()
    samples = sum(len(texts) for texts in result["sample_texts"])
    ray.get(replica.__ray_call__.remote(lambda actor: actor.close()))
    ray.shutdown()
    return {
        "imports": imported - started,
        "ray_init": ray_started - imported,
        "actor_ready": ready - ray_started,
        "first_batch": first - ready,
        "total_to_first_batch": first - started,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["fork", "spawn"], choices=["fork", "spawn"])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for index in range(args.runs):
        for mode in args.modes:  # interleaved, so a slow minute of the machine hits both
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            child_run = subprocess.run(
                [sys.executable, __file__, "--child", mode],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            lines = [line for line in child_run.stdout.splitlines() if line.startswith("RESULT ")]
            if child_run.returncode or not lines:
                sys.exit(f"{mode}: failed\n{child_run.stderr[-3000:]}")
            result = json.loads(lines[-1].removeprefix("RESULT "))
            results[mode].append(result)
            print(
                f"{mode:<6} run {index + 1}: "
                + ", ".join(f"{name} {value:.1f} s" for name, value in result.items() if name != "samples")
                + f" ({result['samples']} samples)",
                flush=True,
            )
    for mode, runs in results.items():
        mean = sum(run["actor_ready"] for run in runs) / len(runs)
        print(f"{mode:<6} actor start to ready, mean of {len(runs)}: {mean:.1f} s", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(child(sys.argv[2])), flush=True)
    else:
        main()
