"""The driver-memory bounds (s2d.cluster.backpressure) on a real Ray Data execution: a fast source in front of a slow
actor pool runs at most the queued-rows cap ahead of it, every row still comes out exactly once, and an operator
keeps the stats of its last few blocks only. Without them the source queues nearly the whole input and every
block's stats stay (the driver-memory growth bench/scale.py measured)."""

from __future__ import annotations

import contextlib
import re
import sys
import time

import pytest

from s2d.cluster.backpressure import ROWS_CAP_KEY, STATS_KEPT_KEY, driver_memory_bounded

pytestmark = pytest.mark.integration

SHARDS, ROWS_PER_SHARD, BATCH = 40, 16, 8
STATS_KEPT = 4
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
        # Slow enough that, uncapped, the source is far ahead before the pool drains (at 0.1 s a batch, a busy
        # machine once saw the uncapped lead reach only 192 rows: the control then failed, not the cap).
        time.sleep(0.2)
        return batch


def _peak_lead(ray, capped: bool) -> tuple[int, list[int], int]:
    """The source's largest lead over the pool, every row that came out, and the blocks of the source whose
    stats Ray Data kept (what `Dataset.stats()` reports)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
    context = ray.data.DataContext.get_current()
    ledger = ray.remote(_Lead).options(name=LEDGER, num_cpus=0).remote()
    try:
        with driver_memory_bounded(context, 2 * BATCH, STATS_KEPT) if capped else contextlib.nullcontext():
            dataset = (
                ray.data.from_items([{"shard": shard} for shard in range(SHARDS)])
                .map_batches(_load, batch_size=1)
                .repartition(target_num_rows_per_block=BATCH, strict=True)  # stages apart, as the generate stage
                .map_batches(_SlowPool, batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=1))
            )
            rows = dataset.take_all()
        load_stats = re.search(r"MapBatches\(_load\): \d+ tasks executed, (\d+) blocks produced", dataset.stats())
        return ray.get(ledger.peak.remote()), sorted(row["row"] for row in rows), int(load_stats.group(1))
    finally:
        ray.kill(ledger)


def test_the_source_runs_at_most_the_cap_ahead_of_a_slow_pool_and_block_stats_stay_few(ray_session):
    everything = list(range(SHARDS * ROWS_PER_SHARD))
    capped, rows, stats_kept = _peak_lead(ray_session, capped=True)
    assert rows == everything  # every row exactly once
    # The cap (16 rows), plus what tasks already running may still emit: one shard per load task in flight
    # and the pool's two batches in hand. The whole input is 640 rows.
    assert capped <= 2 * BATCH + 4 * ROWS_PER_SHARD + 2 * BATCH, capped

    # Of 40 blocks: trimmed to the last 4 once 8 accumulate, plus what load tasks in flight add before the next check.
    assert stats_kept < 2 * STATS_KEPT + 4, stats_kept

    context = ray_session.data.DataContext.get_current()  # both bounds ended with their block
    assert context.get_config(ROWS_CAP_KEY) is None and context.get_config(STATS_KEPT_KEY) is None
    uncapped, rows, stats_kept = _peak_lead(ray_session, capped=False)
    assert rows == everything
    assert uncapped > 3 * capped, (uncapped, capped)  # what the cap prevents: the source queues the input
    assert stats_kept == SHARDS  # and without the bound, Ray Data keeps every block's stats
