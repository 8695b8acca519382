"""The queued-rows cap (cluster.backpressure) on a real Ray Data execution: a fast source in front of a slow actor
pool runs at most the cap ahead of it, and every row still comes out exactly once. Without the cap the source
queues nearly the whole input (the driver-memory growth bench/scale.py measured)."""

from __future__ import annotations

import contextlib
import sys
import time

import pytest

from cluster.backpressure import ROWS_CAP_KEY, queued_rows_capped

pytestmark = pytest.mark.integration

SHARDS, ROWS_PER_SHARD, BATCH = 40, 16, 8
LEDGER = "s2d-test-backpressure-lead"


class _Lead:
    """Rows the source produced minus rows the pool took, and the most it ever was."""

    def __init__(self):
        self.lead = self.most = 0

    def add(self, rows: int) -> None:
        self.lead += rows
        self.most = max(self.most, self.lead)

    def peak(self) -> int:
        return self.most


def _load(batch):
    import ray

    ledger = ray.get_actor(LEDGER)
    for shard in batch["shard"]:
        ray.get(ledger.add.remote(ROWS_PER_SHARD))
        yield {"row": [int(shard) * ROWS_PER_SHARD + i for i in range(ROWS_PER_SHARD)]}


class _SlowPool:
    def __init__(self):
        import ray

        self.ledger = ray.get_actor(LEDGER)

    def __call__(self, batch):
        import ray

        ray.get(self.ledger.add.remote(-len(batch["row"])))
        time.sleep(0.1)
        return batch


def _peak_lead(ray, capped: bool) -> tuple[int, list[int]]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
    context = ray.data.DataContext.get_current()
    ledger = ray.remote(_Lead).options(name=LEDGER, num_cpus=0).remote()
    try:
        with queued_rows_capped(context, 2 * BATCH) if capped else contextlib.nullcontext():
            rows = (
                ray.data.from_items([{"shard": shard} for shard in range(SHARDS)])
                .map_batches(_load, batch_size=1)
                .repartition(target_num_rows_per_block=BATCH, strict=True)  # as engine.pipeline: stages apart
                .map_batches(_SlowPool, batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=1))
                .take_all()
            )
        return ray.get(ledger.peak.remote()), sorted(row["row"] for row in rows)
    finally:
        ray.kill(ledger)


def test_the_source_runs_at_most_the_cap_ahead_of_a_slow_pool(ray_session):
    everything = list(range(SHARDS * ROWS_PER_SHARD))
    capped, rows = _peak_lead(ray_session, capped=True)
    assert rows == everything  # every row exactly once
    # The cap (16 rows), plus what tasks already running may still emit: one shard per load task in flight
    # and the pool's two batches in hand. The whole input is 640 rows.
    assert capped <= 2 * BATCH + 4 * ROWS_PER_SHARD + 2 * BATCH, capped

    assert ray_session.data.DataContext.get_current().get_config(ROWS_CAP_KEY) is None  # the cap ended with its block
    uncapped, rows = _peak_lead(ray_session, capped=False)
    assert rows == everything
    assert uncapped > 3 * capped, (uncapped, capped)  # what the cap prevents: the source queues the input
