"""Where a generation replica's start-up goes: the driver's imports, Ray, the actor, vLLM, the first batch.

    .venv/bin/python bench/replica_start.py                    # ~2 minutes on 2 cores
    .venv/bin/python bench/replica_start.py --worker-process   # vLLM's own layout (main before issue 26)
    .venv/bin/python bench/replica_start.py --vllm-spawn       # vLLM spawns its engine core (no fork server)

Each run is one fresh process, as `s2d generate` starts one: imports, `ray.init` (no dashboard), one
`GenerationReplica` actor with a job's engine settings (the packaged model, already converted) and the
pipeline's runtime_env, `ready()`, then one small System 1 batch (4 inputs, n=8, 32 tokens). The actor's own
phases come from the replica (`startup_s`: its imports, model resolution, `import vllm`, the engine start: vLLM
spawns its engine core, which spawns its worker, each importing torch and vLLM afresh, then loads the model).
The rest of "actor ready" is Ray starting the actor's worker process. Then `close`: the engine's clean shutdown.
`--worker-process` keeps vLLM's CPU engine worker in a process of its own (S2D_ENGINE_WORKER_PROCESS=1: how
the replica started before issue 26), `--vllm-spawn` has vLLM spawn its engine core itself instead of forking it
from the replica's fork server (S2D_ENGINE_FORKSERVER=0, actors/engine_forkserver.py), to compare side by side.
With the fork server the core's imports run beside the replica's own "import_vllm", which takes longer for it.
Prints each phase per run.
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


def child() -> dict:
    started = time.perf_counter()
    import pyarrow as pa
    import ray

    from s2d.actors.replica import RUNTIME_ENV, GenerationReplica
    from s2d.cluster.placement import MAX_BATCHES_PER_REPLICA
    from s2d.engine.core.spec import parse_spec
    from s2d.engine.data.generated import sample_count
    from s2d.engine.stages.generate import input_rows

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
    replica = (
        ray.remote(GenerationReplica)
        .options(num_cpus=1, max_concurrency=MAX_BATCHES_PER_REPLICA, runtime_env=RUNTIME_ENV)
        .remote(**GenerationReplica.for_job(spec))
    )
    ray.get(replica.ready.remote())
    ready = time.perf_counter()
    rows = list(input_rows(spec, num_shards=1))
    result = ray.get(replica.__call__.remote(pa.Table.from_pylist(rows).to_pydict()))
    first = time.perf_counter()
    inside = ray.get(replica.__ray_call__.remote(lambda actor: actor.startup_s))
    closing = time.perf_counter()
    ray.get(replica.__ray_call__.remote(lambda actor: actor.close()))
    closed = time.perf_counter()
    ray.shutdown()
    return {
        "driver imports": imported - started,
        "ray.init": ray_started - imported,
        "actor ready": ready - ray_started,
        **{f"  actor {name}": value for name, value in inside.items()},
        "first batch": first - ready,
        "total": first - started,
        "close": closed - closing,
        "samples": sample_count(result),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--worker-process", action="store_true", help="vLLM's worker in a process of its own")
    parser.add_argument("--vllm-spawn", action="store_true", help="vLLM spawns its engine core (no fork server)")
    args = parser.parse_args()
    for index in range(args.runs):
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            S2D_ENGINE_WORKER_PROCESS="1" if args.worker_process else "0",
            S2D_ENGINE_FORKSERVER="0" if args.vllm_spawn else "1",
        )
        run = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode or not lines:
            sys.exit(f"run {index + 1} failed\n{run.stderr[-3000:]}")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        print(
            f"run {index + 1}: "
            + ", ".join(f"{name.strip()} {value:.1f} s" for name, value in result.items() if name != "samples")
            + f" ({result['samples']} samples)",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(child()), flush=True)
    else:
        main()
