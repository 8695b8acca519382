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

Both read Ray Data's executor state (internal API, written against Ray 2.60): on a Ray whose internals differ
they turn themselves off with one warning in the job log, and the job runs as it would without them.
tests/integration/test_backpressure.py runs them on a real execution and shows what they prevent.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

ROWS_CAP_KEY = "s2d.queued_rows_cap"
STATS_KEPT_KEY = "s2d.block_stats_kept"
BLOCK_STATS_KEPT = 1000  # per operator: enough for Ray Data's end-of-execution summary to mean something
log = logging.getLogger(__name__)


@contextlib.contextmanager
def driver_memory_bounded(context: Any, rows_cap: int, stats_kept: int = BLOCK_STATS_KEPT) -> Iterator[None]:
    """For the datasets *built* inside the block (Ray Data takes the DataContext's settings when it builds a
    dataset): at most `rows_cap` rows wait between two stages, and each operator keeps the stats of its last
    `stats_kept` blocks only. `context`'s settings are as they were afterwards. Neither, with a warning,
    where this Ray's Data internals are not the ones they read."""
    try:
        from ray.data._internal.execution.backpressure_policy import (
            ENABLED_BACKPRESSURE_POLICIES,
            ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        )

        rows_cap_policy, stats_policy = policy_classes()
    except (ImportError, AttributeError) as error:
        log.warning("driver-memory bounds off (this Ray Data differs: %s); queues are bounded by bytes only", error)
        yield
        return
    keys = (ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ROWS_CAP_KEY, STATS_KEPT_KEY)
    saved = {key: context.get_config(key, None) for key in keys}
    policies = list(saved[ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY] or ENABLED_BACKPRESSURE_POLICIES)
    # The stats tail first: Ray Data stops asking at the first policy that holds an operator back.
    context.set_config(
        ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        [stats_policy, *(p for p in policies if p not in (stats_policy, rows_cap_policy)), rows_cap_policy],
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
    from ray.data._internal.execution.backpressure_policy import BackpressurePolicy

    class QueuedRowsCap(BackpressurePolicy):
        """No new task for an operator while `ROWS_CAP_KEY` rows of its output wait for the next operator."""

        @property
        def name(self) -> str:
            return "S2dQueuedRowsCap"

        def can_add_input(self, op) -> bool:
            cap = self._data_context.get_config(ROWS_CAP_KEY, None)
            state = self._topology.get(op)
            if cap is None or state is None:
                return True
            try:
                return rows_waiting_downstream(op, state) < cap
            except AttributeError as error:  # a Ray whose queues look different: never stall a job over it
                log.warning("queued-rows cap off for this execution (%s)", error)
                self._data_context.remove_config(ROWS_CAP_KEY)
                return True

    class BlockStatsTail(BackpressurePolicy):
        """Holds nothing back: Ray Data asks its policies about every operator at every scheduling step, which
        makes this the place to trim the operator's per-block stats to their last `STATS_KEPT_KEY`."""

        @property
        def name(self) -> str:
            return "S2dBlockStatsTail"

        def can_add_input(self, op) -> bool:
            kept = self._data_context.get_config(STATS_KEPT_KEY, None)
            if kept is not None:
                trim_block_stats(op, kept)
            return True

    return QueuedRowsCap, BlockStatsTail


def trim_block_stats(op, kept: int) -> None:
    """Drop all but the last `kept` of `op`'s per-block stats, once they reach twice that (a slice deletion per
    `kept` blocks). An operator without that list (another kind, or another Ray) is left as it is."""
    stats = getattr(op, "_output_blocks_stats", None)
    if isinstance(stats, list) and len(stats) >= 2 * kept:
        del stats[:-kept]


def rows_waiting_downstream(op, state) -> int:
    """Rows `op` produced that no task has taken yet: its own output buffer, the queue to the next operator
    (`state.output_queue`), and the next operators' input buffers."""
    from ray.data._internal.execution.operators.base_physical_operator import InternalQueueOperatorMixin as queues

    waiting = _queue_rows(state.output_queue)
    if isinstance(op, queues):
        waiting += sum(queue.num_rows() or 0 for queue in op._output_queues)
    for downstream in op.output_dependencies:
        if isinstance(downstream, queues):
            waiting += sum(queue.num_rows() or 0 for queue in downstream._input_queues)
    return waiting


def _queue_rows(queue) -> int:
    """Rows in a queue between operators (Ray Data's OpBufferQueue keeps one bundle queue per output split)."""
    return sum(split.num_rows() or 0 for split in queue._queues)
