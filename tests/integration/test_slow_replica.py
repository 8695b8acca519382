"""A replica ten times slower than the other does not stall the job: Ray Data's pool hands each replica at most
two batches at a time (one block per batch, the generate stage), so the fast replica takes the rest of the stream
(issue 5 left this test out).

Real Ray, real vLLM (two replicas of the packaged model). The slow one is the real replica with a delay added
after each batch, nine times the batch's own time, so it runs at a tenth of its speed; which replica is slow
is decided by a small named actor (the first to start).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from s2d.engine.data.manifest import read_manifest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
COUNTER = "s2d-test-slow-replica-counter"


class BatchCounter:
    def __init__(self):
        self.started, self.batches = 0, []

    def join(self) -> bool:
        self.started += 1
        return self.started == 1  # the first replica to start is the slow one

    def done(self, slow: bool, started: float, finished: float) -> None:
        self.batches.append((slow, round(started, 1), round(finished, 1)))

    def timeline(self) -> list:
        return sorted(self.batches, key=lambda batch: batch[1])


def slow_replica_class():
    from s2d.actors.replica import GenerationReplica

    class OneSlowReplica(GenerationReplica):
        def __init__(self, *args, **kwargs):
            import ray

            super().__init__(*args, **kwargs)
            self.counter = ray.get_actor(COUNTER)
            self.slow = ray.get(self.counter.join.remote())

        def __call__(self, batch):
            started = time.monotonic()
            result = super().__call__(batch)
            if self.slow:
                time.sleep(9 * (time.monotonic() - started))
            self.counter.done.remote(self.slow, started, time.monotonic())
            return result

    return OneSlowReplica


@pytest.mark.slow
def test_a_ten_times_slower_replica_does_not_stall_the_job(tmp_path, ray_session, monkeypatch):
    import ray.cloudpickle as cloudpickle  # Ray pickles with its own copy of cloudpickle
    from test_faults import assert_exactly_once

    import s2d.engine.stages.generate
    from s2d.engine.core.spec import load_spec
    from s2d.engine.stages.generate import run_generate

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    counter = ray_session.remote(BatchCounter).options(name=COUNTER, num_cpus=0).remote()
    monkeypatch.setattr(s2d.engine.stages.generate, "replica_class", slow_replica_class)
    out = tmp_path / "run"
    spec = load_spec(
        DEMO,
        [
            "task.num_inputs=16",
            "method.name=system1",
            "sampling.n=2",
            "sampling.max_tokens=16",
            "curate.threshold=0.0",
            "output.inputs_per_shard=4",
            "generation.replicas=2",
            "generation.batch_size=1",
            "generation.cpus_per_replica=0.5",
            "engine.gpu_memory_utilization=0.1",
            f"out={out}",
        ],
    )
    try:
        summary = run_generate(spec, progress=False)
        timeline = ray_session.get(counter.timeline.remote())
    finally:
        ray_session.kill(counter)
    assert summary.inputs == 16 and read_manifest(out).counts.committed_shards == 4
    assert_exactly_once(out, 16)
    # The fast replica took most of the stream; the slow one held back no more than its in-flight batches.
    slow = sum(1 for batch in timeline if batch[0])
    assert len(timeline) - slow >= 3 * max(slow, 1), f"(slow?, started, finished) per batch: {timeline}"
