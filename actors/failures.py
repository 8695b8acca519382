"""The job's ledger of replica faults, and how a failure is named: what the replicas of one job share.

`EngineFailures` runs as one small named actor per generate job (engine/stages/generate.py starts it); every replica
reports to it, so limits hold job-wide, not per replica process (a restarted replica starts with no memory).
"""

from __future__ import annotations

from s2d.actors.occupancy import by_replica


class ReplicaFailed(RuntimeError):
    """The engine failed as often as the job allows: a fault that restarts do not cure (bad model, bad GPU)."""


class EngineFailures:
    """The job's ledger of replica faults (one small named actor): engine failures, counted job-wide so that a
    fault that repeats on every restart stops the job instead of restarting forever; and batch timeouts, per
    batch (a timed-out batch is retried once, then quarantined) and per replica (restarts they cost)."""

    def __init__(self):
        self._causes: list[str] = []
        self._timeouts: dict[str, int] = {}
        self._timeout_restarts: dict[str, int] = {}
        self._occupancy: dict[str, dict[str, dict[str, int]]] = {}  # replica -> its life (process) -> summary

    def report_occupancy(self, replica: str, life: str, summary: dict[str, int]) -> None:
        """A replica's occupancy sums so far (s2d.actors.occupancy), sent after each batch and every few seconds."""
        self._occupancy.setdefault(replica, {})[life] = summary

    def occupancy(self) -> dict[str, dict]:
        """Per replica, its engine's mean occupancy over the job (`s2d.actors.occupancy.merge`)."""
        return by_replica(self._occupancy)

    def record(self, cause: str) -> int:
        self._causes.append(cause)
        return len(self._causes)

    def causes(self) -> list[str]:
        return list(self._causes)

    def batch_timed_out(self, batch: str) -> int:
        """Times the batch of this key has timed out, this one included."""
        self._timeouts[batch] = self._timeouts.get(batch, 0) + 1
        return self._timeouts[batch]

    def restart_for_timeout(self, replica: str, allowed: int) -> bool:
        """Whether `replica` may restart for a timeout: at most `allowed` times, leaving the rest of Ray's
        max_restarts for process deaths and engine errors."""
        if self._timeout_restarts.get(replica, 0) >= allowed:
            return False
        self._timeout_restarts[replica] = self._timeout_restarts.get(replica, 0) + 1
        return True


def describe_failure(error: BaseException) -> str:
    """`Name: message` of what failed: inside an exception group (a method's concurrent chains run in a TaskGroup),
    its first leaf, not "unhandled errors in a TaskGroup"."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
