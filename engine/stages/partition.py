"""The generate stage's inputs, partitioned before its pipeline starts or beside the replicas' start.

A replica takes seconds to start on a CPU and minutes on a GPU (a large model's weights); partitioning a large
input takes a while too (s2d.engine.data.inputs). When the replica pool leaves the cluster CPUs for the
partition's tasks (replica_pool.leaves_cpus_for_partition), the pipeline starts first and the partition runs in a
driver thread beside it: the pipeline's load tasks wait in the job's gate (s2d.actors.inputs_gate) until every
shard's inputs are written, and the driver commits nothing before it has the plan. Otherwise (a pool that takes
every CPU, or a finished plan reused) the plan comes first, as it always did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from s2d.engine.data.inputs import InputPlan


class JobInputs:
    """A job's input plan: ready now, or being partitioned beside the pipeline (`gate` is then the InputsGate
    actor its load tasks wait in, else None). `seconds`: how long the partition took."""

    def __init__(self, ray, prepare: Callable[[], InputPlan], beside: bool):
        self.gate = None
        self._ray = ray
        self.seconds = 0.0
        self._plan: InputPlan | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not beside:
            self._run(prepare)
            self.plan()  # its error, if any, raised here
            return
        from s2d.actors.inputs_gate import InputsGate

        self.gate = ray.remote(InputsGate).options(num_cpus=0).remote()
        self._thread = threading.Thread(target=self._run, args=(prepare,), name="s2d-partition", daemon=True)
        self._thread.start()

    def _run(self, prepare: Callable[[], InputPlan]) -> None:
        started = time.monotonic()
        try:
            self._plan = prepare()
        except BaseException as error:  # noqa: BLE001 - re-raised in the driver's thread by plan()
            self._error = error
        self.seconds = time.monotonic() - started
        if self.gate is not None:
            # Only now, with plan.json written: a load task that passes the gate reads a complete shard.
            try:
                if self._error is not None:
                    self.gate.open.remote(f"{type(self._error).__name__}: {self._error}")
                else:
                    self.gate.open.remote(None, self._plan.valid.nonzero()[0].tolist())
            except Exception:  # noqa: BLE001 - Ray already shut down: the job ended (failed) before the partition
                pass

    @property
    def beside(self) -> bool:
        return self.gate is not None

    def plan(self) -> InputPlan:
        """The plan, once the partition is complete (waiting for it if it runs beside the pipeline); the
        partition's error is raised here, as it was raised where it ran."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._plan is not None
        return self._plan

    def close(self) -> None:
        """Stop the gate actor (the pipeline is over)."""
        if self.gate is not None:
            self._ray.kill(self.gate)
