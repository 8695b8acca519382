"""What Ray Data may keep in the driver during a generate job: no stage runs more than a few batches ahead of
the next (count-based backpressure), and no operator keeps the stats of every block it produced.

Ray Data backpressures an operator by object-store *bytes*. s2d's inputs are small (a batch of 1,024 short
questions is tens of KB), so a byte budget lets a fast stage queue nearly the whole input in front of a slower
one, and the driver keeps state for every queued block (its metadata, and the block itself when it is under
100 KB: such blocks live in the owner's memory store). Measured on a plain Ray Data pipeline of the same
shape: driver RSS +204 MiB at 5M inputs, +406 MiB at 10M, growing until the source was fully read, while the
object store stayed flat. `QueuedRowsCap` keeps an operator from starting a task while the rows it produced
that no task has taken yet reach a cap that scales with the replica pool, not the input (s2d.engine.stages.generate
sets it): the queues stay a few batches deep, and so do the driver and the object store.

Its cost: the stages upstream stay alive until the end of the job instead of finishing early, and Ray Data
reserves at least one task's CPUs for each live stage; with too few logical CPUs for the replicas plus one
task per stage, curation runs one task at a time (bench/RESULTS.md has both cases).

The same block also bounds what each operator keeps of finished blocks (`BlockStatsTail`): Ray Data keeps
one stats record per output block and operator for the life of an execution, for `Dataset.stats()` (an open
upstream bug, ray-project/ray#66016), about 1 KB each, and the driver's garbage collector walks them all.
With one block per replica batch that is the driver's largest growth (measured at 2M inputs: ~15 bytes per
input with them, ~3 without); the tail keeps the last BLOCK_STATS_KEPT per operator, so Ray Data's stats
summary in its log covers those blocks only. s2d reports its own counts.

Both read Ray Data's executor state, through s2d.cluster.compat_ray (its paths `queued_rows_cap` and
`block_stats_tail`): on a Ray whose internals differ each turns itself off with one warning line, and the job runs
as it would without it. tests/integration/test_backpressure.py runs them on a real execution and shows what they
prevent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from s2d.cluster import compat_ray

ROWS_CAP_KEY = "s2d.queued_rows_cap"
STATS_KEPT_KEY = "s2d.block_stats_kept"
BLOCK_STATS_KEPT = 1000  # per operator: enough for Ray Data's end-of-execution summary to mean something


@contextlib.contextmanager
def driver_memory_bounded(context: Any, rows_cap: int, stats_kept: int = BLOCK_STATS_KEPT) -> Iterator[None]:
    """For the datasets *built* inside the block (Ray Data takes the DataContext's settings when it builds a
    dataset): at most `rows_cap` rows wait between two stages, and each operator keeps the stats of its last
    `stats_kept` blocks only. `context`'s settings are as they were afterwards. Each bound is left out, with a
    warning (s2d.cluster.compat_ray), where this Ray's Data internals are not the ones it reads."""
    on = compat_ray.check("queued_rows_cap", "block_stats_tail")
    if not any(on.values()):
        yield
        return
    _, default_policies, policies_key = compat_ray.backpressure_policy_api()
    rows_cap_policy, stats_policy = policy_classes()
    keys = (policies_key, ROWS_CAP_KEY, STATS_KEPT_KEY)
    saved = {key: context.get_config(key, None) for key in keys}
    policies = [p for p in saved[policies_key] or default_policies if p not in (stats_policy, rows_cap_policy)]
    # The stats tail first: Ray Data stops asking at the first policy that holds an operator back.
    context.set_config(
        policies_key,
        [stats_policy] * on["block_stats_tail"] + policies + [rows_cap_policy] * on["queued_rows_cap"],
    )
    context.set_config(ROWS_CAP_KEY, max(1, int(rows_cap)))
    context.set_config(STATS_KEPT_KEY, max(1, int(stats_kept)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                context.remove_config(key)
            else:
                context.set_config(key, value)


@functools.cache
def policy_classes() -> tuple[type, type]:
    """The two policies, defined on first use (their base class is Ray Data's) and once (found again in the list)."""
    base, _, _ = compat_ray.backpressure_policy_api()

    class QueuedRowsCap(base):
        """No new task for an operator while `ROWS_CAP_KEY` rows of its output wait for the next operator."""

        @property
        def name(self) -> str:
            return "S2dQueuedRowsCap"

        def can_add_input(self, op) -> bool:
            data_context, topology = compat_ray.policy_state(self)
            cap = data_context.get_config(ROWS_CAP_KEY, None)
            state = topology.get(op)
            if cap is None or state is None:
                return True
            try:
                return compat_ray.rows_waiting_downstream(op, state) < cap
            except AttributeError as error:  # a Ray whose queues look different: never stall a job over it
                compat_ray.INTERNALS.switch_off("queued_rows_cap", error)
                data_context.remove_config(ROWS_CAP_KEY)
                return True

    class BlockStatsTail(base):
        """Holds nothing back: Ray Data asks its policies about every operator at every scheduling step, which
        makes this the place to trim the operator's per-block stats to their last `STATS_KEPT_KEY`."""

        @property
        def name(self) -> str:
            return "S2dBlockStatsTail"

        def can_add_input(self, op) -> bool:
            data_context, _ = compat_ray.policy_state(self)
            kept = data_context.get_config(STATS_KEPT_KEY, None)
            if kept is not None:
                compat_ray.trim_block_stats(op, kept)
            return True

    return QueuedRowsCap, BlockStatsTail
