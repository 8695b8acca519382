"""A hung batch never hangs the job: past generation.batch_timeout_s it is retried once on a fresh engine (its replica
restarts), and past it again its inputs are quarantined as batch_timeout; every other input comes out as usual.

Real Ray, real vLLM. The hang is injected: the replica, for the one input a small named actor picked (the first it
was asked about), waits on the engine's loop for an hour before generating, so every attempt at that batch hangs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
POISON = "s2d-test-poisoned-batch"


class Poison:
    """Picks the first batch it is asked about; says it hangs each time it is asked again, and by which process."""

    def __init__(self):
        self.chosen: list[str] | None = None
        self.attempts: list[int] = []  # pid of each attempt at the chosen batch

    def hangs(self, input_ids: list[str], pid: int) -> bool:
        if self.chosen is None:
            self.chosen = input_ids
        if input_ids != self.chosen:
            return False
        self.attempts.append(pid)
        return True

    def report(self) -> tuple[list[str] | None, list[int]]:
        return self.chosen, self.attempts


def hanging_replica_class():
    from s2d.actors.replica import GenerationReplica

    class OneHangingBatch(GenerationReplica):
        def generate_rows(self, rows, *args, **kwargs):
            import ray

            ids = [str(row["input_id"]) for row in rows]
            if ray.get(ray.get_actor(POISON).hangs.remote(ids, os.getpid())):
                self.generator.run(asyncio.sleep(3600))  # under the batch's deadline, like a request that never ends
            return super().generate_rows(rows, *args, **kwargs)

    return OneHangingBatch


@pytest.mark.parametrize(
    "max_restarts, fresh_engine",
    [(4, True), pytest.param(0, False, marks=pytest.mark.slow)],
    ids=["retried-on-a-restarted-replica", "no-restart-left-retried-in-place"],
)
def test_a_hung_batch_is_retried_then_quarantined_and_the_job_completes(
    tmp_path, ray_session, monkeypatch, max_restarts, fresh_engine
):
    import ray.cloudpickle as cloudpickle  # Ray pickles with its own copy of cloudpickle
    from test_faults import assert_exactly_once

    import s2d.engine.stages.replica_pool
    from s2d.engine.core.spec import load_spec
    from s2d.engine.data.shards import read_committed
    from s2d.engine.stages.generate import run_generate

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    poison = ray_session.remote(Poison).options(name=POISON, num_cpus=0).remote()
    monkeypatch.setattr(s2d.engine.stages.replica_pool, "replica_class", hanging_replica_class)
    out, num_inputs = tmp_path / "run", 6
    spec = load_spec(
        DEMO,
        [
            f"task.num_inputs={num_inputs}",
            "method.name=system1",
            "sampling.n=2",
            "sampling.max_tokens=16",
            "curate.threshold=0.0",
            "output.inputs_per_shard=3",
            "generation.batch_size=1",
            "generation.batch_timeout_s=8",
            f"generation.max_restarts={max_restarts}",
            f"out={out}",
        ],
    )
    try:
        summary = run_generate(spec, progress=False)
        chosen, attempts = ray_session.get(poison.report.remote())
    finally:
        ray_session.kill(poison)
    assert summary.inputs == num_inputs
    assert_exactly_once(out, num_inputs)
    quarantined = read_committed(out, "quarantine").to_pylist()
    assert [row["input_id"] for row in quarantined] == chosen, quarantined
    assert quarantined[0]["reason"] == "batch_timeout" and "batch_timeout_s=8" in quarantined[0]["detail"]
    assert len(attempts) == 2, f"tried once, retried once: {attempts}"
    assert (attempts[0] != attempts[1]) == fresh_engine, f"the retry's replica process: {attempts}"
