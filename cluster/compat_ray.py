"""Ray's and Ray Data's internals that s2d uses, each behind one function here and nowhere else.

Tested with ray 2.60.0; pyproject pins `ray>=2.60,<2.61`: Ray Data's executor internals change between minor
releases. `INTERNALS.check()` probes them (`enabled(path)` probes one, on first use: the generate stage's start);
a path whose internal is gone is switched off with one warning line, and s2d runs without it:

- `queued_rows_cap`, `block_stats_tail`: Ray Data's backpressure-policy API (`ray.data._internal.execution`),
  operators' `_input_queues` / `_output_queues`, the executor's `OpState.output_queue` and `OpBufferQueue._queues`,
  operators' `_output_blocks_stats` (s2d.cluster.backpressure). Off: queues are bounded by bytes only (Ray Data's
  default) and every block's stats stay in the driver.
- `executor_wait`: Ray Data's `streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S`, how long each step of
  its executor waits for its tasks (s2d.engine.stages.generate shortens it during a job). Off: 0.1 s, Ray Data's
  own; a replica that finished its batches waits up to that long for the next.
- `keep_child_processes`: the Ray system config `kill_child_processes_on_worker_exit`, set through its environment
  variable for the replica actors (s2d.actors.replica.RUNTIME_ENV). Off: the variable is not set; Ray may kill a
  replica's vLLM engine before the replica closes it, which vLLM logs as an EngineDeadError at a job's end.
- `submitted_job_env`: the variable Ray sets in the driver of a job submitted through its job API
  (s2d.cluster.connect). Off: a driver started by `s2d submit` is told apart from others by nothing; its
  `ray.init` may repeat the job's runtime_env keys, which Ray refuses.

Ray itself is imported inside the functions only: importing s2d does not import Ray.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from s2d.engine.core.compat import Internal, Internals

KEEP_CHILD_PROCESSES_FLAG = "kill_child_processes_on_worker_exit"  # a Ray system config, read from RAY_<name>
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's driver (holds its config)
_EXECUTION = "ray.data._internal.execution"


def backpressure_policy_api() -> tuple[type, list[type], str]:
    """Ray Data's backpressure-policy base class, the policies it enables by default, and the DataContext key
    that overrides them."""
    from ray.data._internal.execution.backpressure_policy import (
        ENABLED_BACKPRESSURE_POLICIES,
        ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        BackpressurePolicy,
    )

    return BackpressurePolicy, list(ENABLED_BACKPRESSURE_POLICIES), ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY


def policy_state(policy: Any) -> tuple[Any, dict[Any, Any]]:
    """A backpressure policy's DataContext and the executor's topology (operator -> OpState)."""
    return policy._data_context, policy._topology


def rows_waiting_downstream(op: Any, state: Any) -> int:
    """Rows `op` produced that no task has taken yet: its own output buffer, the queue to the next operator
    (`state.output_queue`, one bundle queue per output split), and the next operators' input buffers."""
    from ray.data._internal.execution.operators.base_physical_operator import InternalQueueOperatorMixin as queues

    waiting = sum(split.num_rows() or 0 for split in state.output_queue._queues)
    if isinstance(op, queues):
        waiting += sum(queue.num_rows() or 0 for queue in op._output_queues)
    for downstream in op.output_dependencies:
        if isinstance(downstream, queues):
            waiting += sum(queue.num_rows() or 0 for queue in downstream._input_queues)
    return waiting


def trim_block_stats(op: Any, kept: int) -> None:
    """Drop all but the last `kept` of `op`'s per-block stats, once they reach twice that (a slice deletion per
    `kept` blocks). An operator without that list (another kind) is left as it is."""
    stats = getattr(op, "_output_blocks_stats", None)
    if isinstance(stats, list) and len(stats) >= 2 * kept:
        del stats[:-kept]


@contextlib.contextmanager
def executor_wait(seconds: float) -> Iterator[None]:
    """Inside the block, each step of Ray Data's executor waits at most `seconds` for its tasks (0.1 s by default).
    A step waits for *all* its running tasks (`ray.wait(num_returns=len(active))`), so while any one of them runs
    longer (a replica's other batches), every step waits the whole timeout before it hands out more work. As it
    was outside the block; unchanged on a Ray without it."""
    if not INTERNALS.enabled("executor_wait"):
        yield
        return
    from ray.data._internal.execution import streaming_executor_state as state

    saved, state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, seconds
    try:
        yield
    finally:
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = saved


def replica_env_vars() -> dict[str, str]:
    """The replica actors' environment: Ray keeps a replica's child processes (vLLM's engine) alive through its
    graceful exit, so the replica closes its engine itself. Empty on a Ray without that flag."""
    if not INTERNALS.enabled("keep_child_processes"):
        return {}
    return {f"RAY_{KEEP_CHILD_PROCESSES_FLAG}": "0"}


def submitted_job_env() -> str:
    """The variable that marks a submitted job's driver (probed on first use; its name either way)."""
    INTERNALS.enabled("submitted_job_env")
    return SUBMITTED_JOB_ENV


# ---- probes: each True while the installed Ray still has what the function above reads ----------------------


def _assigns(cls: type, *names: str) -> bool:
    """Whether `cls.__init__` sets these attributes (instance attributes have no class-level trace)."""
    return set(names) <= set(cls.__init__.__code__.co_names)


def _has_policy_api() -> bool:
    base, _, _ = backpressure_policy_api()
    return callable(getattr(base, "can_add_input", None)) and _assigns(base, "_data_context", "_topology")


def _has_queues() -> bool:
    from ray.data._internal.execution.operators.base_physical_operator import InternalQueueOperatorMixin
    from ray.data._internal.execution.streaming_executor_state import OpBufferQueue, OpState

    mixin = {"_input_queues", "_output_queues"} <= set(dir(InternalQueueOperatorMixin))
    return _has_policy_api() and mixin and _assigns(OpState, "output_queue") and _assigns(OpBufferQueue, "_queues")


def _has_block_stats() -> bool:
    from ray.data._internal.execution.operators.map_operator import MapOperator

    return _has_policy_api() and _assigns(MapOperator, "_output_blocks_stats")


def _has_executor_wait() -> bool:
    from ray.data._internal.execution import streaming_executor_state as state

    timeout = getattr(state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", None)
    reads_it = "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S" in state.process_completed_tasks.__code__.co_names
    return isinstance(timeout, float) and reads_it


def _has_flag(flag: str) -> bool:
    """Ray reads its system configs in C++ (the core worker, in `ray/_raylet.so`); a flag it no longer defines
    is ignored without a word, so look for its name there. Ray is not imported."""
    spec = importlib.util.find_spec("ray")
    library = Path(next(iter(spec.submodule_search_locations))) / "_raylet.so"
    with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as binary:
        return binary.find(flag.encode() + b"\0") >= 0


def _has_submitted_job_env() -> bool:
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    return RAY_JOB_CONFIG_JSON_ENV_VAR == SUBMITTED_JOB_ENV


_BYTES_ONLY = "Ray Data bounds its queues by bytes only; the driver's memory may grow with the input"
INTERNALS = Internals(
    "ray",
    ("ray",),
    {
        "queued_rows_cap": Internal(
            f"{_EXECUTION}'s BackpressurePolicy and operator queues", f"no queued-rows cap ({_BYTES_ONLY})", _has_queues
        ),
        "block_stats_tail": Internal(
            f"{_EXECUTION}'s BackpressurePolicy and MapOperator._output_blocks_stats",
            "every block's stats stay in the driver (about 1 KB per block)",
            _has_block_stats,
        ),
        "executor_wait": Internal(
            f"{_EXECUTION}.streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S",
            "Ray Data's executor waits its own 0.1 s per step: a replica may wait that long for its next batch",
            _has_executor_wait,
        ),
        "keep_child_processes": Internal(
            f"the system config {KEEP_CHILD_PROCESSES_FLAG}",
            "replicas run without it (a job's end may log vLLM's EngineDeadError)",
            lambda: _has_flag(KEEP_CHILD_PROCESSES_FLAG),
        ),
        "submitted_job_env": Internal(
            SUBMITTED_JOB_ENV,
            "a driver started by `s2d submit` is not recognised as one (Ray may refuse its runtime_env)",
            _has_submitted_job_env,
        ),
    },
)
check = INTERNALS.check
