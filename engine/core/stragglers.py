"""Which slow batch a replica done with its own should re-run (issue 26): the pure decision behind re-issuing
stragglers.

At a job's tail the pool waits for its slowest replica's batches. A batch held far longer than the pool's median
batch time is most likely on a slow replica (a throttled GPU, a noisy neighbour), so a replica whose own work is
done runs a copy;
whichever finishes first is returned, once, by the replica that holds the batch (s2d.actors.stragglers).

Batch time is measured the same way everywhere: from the moment the replica took the batch to the moment it
returned it (queueing behind the replica's other batches included), so a held batch's age and the pool's median
are comparable.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# When nothing held can be re-issued yet, the soonest a waiting replica asks again (and the latest): often enough to
# catch a straggler within a second or so, rarely enough that a thousand waiting replicas do not flood the coordinator.
MIN_ASK_AGAIN_S = 0.25
MAX_ASK_AGAIN_S = 5.0
ASK_AGAIN_UNKNOWN_S = 1.0  # no median yet, or nothing held that may become eligible


@dataclass(frozen=True)
class StragglerPolicy:
    """When a held batch counts as a straggler: older than `factor` x the pool's median batch time and than `min_s`."""

    factor: float
    min_s: float

    def __post_init__(self) -> None:
        if self.factor <= 1.0:
            raise ValueError(f"the straggler factor must be > 1 (a batch slower than the median), not {self.factor}")
        if self.min_s < 0.0:
            raise ValueError(f"the straggler minimum must be >= 0 seconds, not {self.min_s}")

    def threshold_s(self, median_s: float) -> float:
        """The age past which a held batch may be re-issued."""
        return max(self.factor * median_s, self.min_s)


@dataclass(frozen=True)
class HeldBatch:
    """A batch a replica runs now, as the coordinator sees it."""

    key: str
    holder: str  # the replica that took it from Ray Data (the only one that returns its rows)
    age_s: float  # since the holder took it
    helpers: frozenset[str] = frozenset()  # replicas that run a copy now
    reissued_age_s: float | None = None  # since its latest copy started; None: never re-issued


def pool_median(durations: Iterable[float]) -> float | None:
    """The median of the pool's recent batch times; None before any batch finished (nothing to compare with)."""
    values = [float(seconds) for seconds in durations if seconds >= 0.0]
    return statistics.median(values) if values else None


def pick_straggler(
    held: Sequence[HeldBatch], median_s: float | None, helper: str, policy: StragglerPolicy
) -> HeldBatch | None:
    """The batch `helper` should re-run: the oldest one held by another replica and past the policy's threshold,
    that no copy runs for, or whose latest copy has itself run past the threshold (the helper is slow or dead:
    the holder still owns the batch, so a lost copy loses nothing, but another helper may try). None when no
    batch qualifies or the pool has no median yet."""
    if median_s is None:
        return None
    threshold = policy.threshold_s(median_s)
    candidates = [
        batch
        for batch in held
        if batch.holder != helper
        and helper not in batch.helpers
        and batch.age_s >= threshold
        and (batch.reissued_age_s is None or batch.reissued_age_s >= threshold)
    ]
    return max(candidates, key=lambda batch: batch.age_s, default=None)


def ask_again_in(held: Sequence[HeldBatch], median_s: float | None, helper: str, policy: StragglerPolicy) -> float:
    """Seconds until a waiting `helper` should ask again when `pick_straggler` found nothing: when the first held
    batch of another replica reaches the threshold, within [MIN_ASK_AGAIN_S, MAX_ASK_AGAIN_S]."""
    if median_s is None:
        return ASK_AGAIN_UNKNOWN_S
    threshold = policy.threshold_s(median_s)
    waits = [
        # Both clocks must pass the threshold: the batch's own and, once re-issued, its latest copy's.
        threshold - (batch.age_s if batch.reissued_age_s is None else min(batch.age_s, batch.reissued_age_s))
        for batch in held
        if batch.holder != helper and helper not in batch.helpers
    ]
    if not waits:
        return ASK_AGAIN_UNKNOWN_S
    return min(max(min(waits), MIN_ASK_AGAIN_S), MAX_ASK_AGAIN_S)
