"""Count-based backpressure for the generate pipeline: no stage runs more than a few batches ahead of the next.

Ray Data backpressures an operator by object-store *bytes*. s2d's inputs are small (a batch of 1,024 short
questions is tens of KB), so a byte budget lets a fast stage queue nearly the whole input in front of a slower
one, and the driver keeps state for every queued block (its metadata, and the block itself when it is under
100 KB: such blocks live in the owner's memory store). Measured on a plain Ray Data pipeline of the same
shape: driver RSS +204 MiB at 5M inputs, +406 MiB at 10M, growing until the source was fully read, while the
object store stayed flat. `QueuedRowsCap` keeps an operator from starting a task while the rows it produced
that no task has taken yet reach a cap that scales with the replica pool, not the input (engine.pipeline
sets it): the queues stay a few batches deep, and so do the driver and the object store.

Its cost: the stages upstream stay alive until the end of the job instead of finishing early, and Ray Data
reserves at least one task's CPUs for each live stage; with too few logical CPUs for the replicas plus one
task per stage, curation runs one task at a time (bench/RESULTS.md has both cases).

It reads Ray Data's executor state (internal API, written against Ray 2.60): on a Ray whose internals differ
the cap turns itself off with one warning in the job log, and the job runs as it would without it.
tests/integration/test_backpressure.py runs it on a real execution and shows what it prevents.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

ROWS_CAP_KEY = "s2d.queued_rows_cap"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def queued_rows_capped(context: Any, rows_cap: int) -> Iterator[None]:
    """At most `rows_cap` rows wait between two stages of the datasets *built* inside the block (Ray Data takes
    the DataContext's settings when it builds a dataset); `context`'s settings are as they were afterwards.
    Uncapped, with a warning, where this Ray's Data internals are not the ones the cap reads."""
    try:
        from ray.data._internal.execution.backpressure_policy import (
            ENABLED_BACKPRESSURE_POLICIES,
            ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        )

        policy = queued_rows_cap_class()
    except (ImportError, AttributeError) as error:
        log.warning("queued-rows cap off (this Ray Data differs: %s); queues are bounded by bytes only", error)
        yield
        return
    saved = {key: context.get_config(key, None) for key in (ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ROWS_CAP_KEY)}
    policies = list(saved[ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY] or ENABLED_BACKPRESSURE_POLICIES)
    if policy not in policies:
        context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*policies, policy])
    context.set_config(ROWS_CAP_KEY, max(1, int(rows_cap)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                context.remove_config(key)
            else:
                context.set_config(key, value)


@functools.cache
def queued_rows_cap_class():
    """The policy class, defined on first use (its base class is Ray Data's) and once (found again in the list)."""
    from ray.data._internal.execution.backpressure_policy import BackpressurePolicy
    from ray.data._internal.execution.operators.base_physical_operator import InternalQueueOperatorMixin

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
                return rows_waiting_downstream(op, state, InternalQueueOperatorMixin) < cap
            except AttributeError as error:  # a Ray whose queues look different: never stall a job over it
                log.warning("queued-rows cap off for this execution (%s)", error)
                self._data_context.remove_config(ROWS_CAP_KEY)
                return True

    return QueuedRowsCap


def rows_waiting_downstream(op, state, queue_mixin) -> int:
    """Rows `op` produced that no task has taken yet: its own output buffer, the queue to the next operator
    (`state.output_queue`), and the next operators' input buffers."""
    waiting = _queue_rows(state.output_queue)
    if isinstance(op, queue_mixin):
        waiting += sum(queue.num_rows() or 0 for queue in op._output_queues)
    for downstream in op.output_dependencies:
        if isinstance(downstream, queue_mixin):
            waiting += sum(queue.num_rows() or 0 for queue in downstream._input_queues)
    return waiting


def _queue_rows(queue) -> int:
    """Rows in a queue between operators (Ray Data's OpBufferQueue keeps one bundle queue per output split)."""
    return sum(split.num_rows() or 0 for split in queue._queues)
