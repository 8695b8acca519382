"""The slow-replica scene (issue 26), shared by tests/integration/test_slow_replica.py and bench/slow_replica.py:
a generate job on the packaged model whose replica pool has one replica ten times slower than the other.

The slow replica is the real replica with a delay added to each batch, nine times the batch's own time, so it
runs at a tenth of its speed. The delay runs on the engine's event loop (inside the engine path, like a slower
engine), so a batch whose copy came back first has it aborted like its requests. Which replica is slow is decided
by a small named actor (the first to start). Job time is from the last engine ready to the job's end, its commits
and accounting included; in the pool each replica waits for the other's engine before it takes a batch (engine
starts excluded: two engines starting on two cores is not what is measured).

Ray's workers cannot import this module: its user registers it with cloudpickle.register_pickle_by_value, and
replaces s2d.engine.stages.replica_pool.replica_class with `slow_replica_class`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

DEMO = Path(__file__).parents[1] / "configs" / "demo.yaml"
COUNTER = "s2d-test-slow-replica-counter"
POOL = 2  # replicas in the pool with the slow one
NUM_INPUTS = 12  # 6 rounds of 2 one-input batches: 2.4-3.8 s on the healthy replica alone, on two cores
INPUTS_PER_SHARD = 4
MAX_RATIO = 1.2  # issue 26's bar: job time with the slow replica <= 1.2x the healthy replica alone (on medians)


class BatchCounter:
    def __init__(self, one_slow: bool):
        self.one_slow, self.started, self.batches, self.ready = one_slow, 0, [], []

    def join(self) -> bool:
        self.started += 1
        return self.one_slow and self.started == 1  # the first replica to start is the slow one

    def is_ready(self, slow: bool, at: float) -> None:
        self.ready.append((slow, at))

    def all_ready(self) -> bool:
        return len(self.ready) >= (POOL if self.one_slow else 1)

    def done(self, slow: bool, started: float, finished: float) -> None:
        self.batches.append((slow, started, finished))

    def report(self) -> dict:
        return {"ready": self.ready, "timeline": sorted(self.batches, key=lambda batch: batch[1])}


def slow_replica_class():
    from s2d.actors.replica import GenerationReplica

    class OneSlowReplica(GenerationReplica):
        def __init__(self, *args, **kwargs):
            import ray

            self.counter = ray.get_actor(COUNTER)
            self.slow = ray.get(self.counter.join.remote())
            # The healthy replica alone runs exactly as it does in the pool (vLLM's CPU threads follow the count).
            kwargs["replicas"] = POOL
            super().__init__(*args, **kwargs)
            self.counter.is_ready.remote(self.slow, time.time())
            # Both engines started before either takes a batch: an engine starting on the two cores beside the
            # other's batches would slow them, and engine starts are not what is measured.
            deadline = time.monotonic() + 300
            while not ray.get(self.counter.all_ready.remote()) and time.monotonic() < deadline:
                time.sleep(0.05)

        def generate_checked(self, rows):
            started = time.monotonic()
            table = super().generate_checked(rows)
            if self.slow:  # on the engine's loop, through the replica's backend: aborted with the batch's requests
                self.backend.run(asyncio.sleep(9 * (time.monotonic() - started)))
            return table

        def __call__(self, batch):
            started = time.time()
            result = super().__call__(batch)
            self.counter.done.remote(self.slow, started, time.time())
            return result

    return OneSlowReplica


def timed_job(ray, out: Path, replicas: int, one_slow: bool, *overrides: str) -> dict:
    """Run the job; its figures: job time (from the pool ready to the end), the batches and the re-issues."""
    from s2d.engine.core.spec import load_spec
    from s2d.engine.stages.generate import run_generate

    counter = ray.remote(BatchCounter).options(name=COUNTER, num_cpus=0).remote(one_slow)
    spec = load_spec(
        DEMO,
        [
            f"task.num_inputs={NUM_INPUTS}",
            "method.name=system1",
            "sampling.n=2",
            "sampling.max_tokens=16",
            "curate.threshold=0.0",
            f"output.inputs_per_shard={INPUTS_PER_SHARD}",
            f"generation.replicas={replicas}",
            "generation.batch_size=1",
            "generation.cpus_per_replica=0.5",
            "generation.straggler_factor=3",
            # Batches here take under a second: the default minimum (10 s) is for real batches.
            "generation.straggler_min_s=1",
            "engine.gpu_memory_utilization=0.1",
            f"out={out}",
            *overrides,
        ],
    )
    try:
        summary = run_generate(spec, progress=False)
        ended = time.time()
        report = ray.get(counter.report.remote())
    finally:
        ray.kill(counter)
    metrics = json.loads((out / "metrics.json").read_text())
    # From the last engine ready: no replica takes a batch before (see OneSlowReplica).
    healthy_ready = max(at for _, at in report["ready"])
    return {
        "replicas": replicas,
        "one_slow": one_slow,
        "job_s": round(ended - healthy_ready, 2),
        "summary_inputs": summary.inputs,
        "reissued": metrics["straggler_batches_reissued"],
        "won": metrics["straggler_reissues_won"],
        "stage_s": {name: round(seconds, 2) for name, seconds in metrics["stage_seconds"].items()},
        "batches_slow": sum(1 for batch in report["timeline"] if batch[0]),
        "batches_fast": sum(1 for batch in report["timeline"] if not batch[0]),
        "timeline": [
            (slow, round(s - healthy_ready, 1), round(f - healthy_ready, 1)) for slow, s, f in report["timeline"]
        ],
    }
