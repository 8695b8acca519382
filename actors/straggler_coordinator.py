"""The job's straggler coordinator (issue 26): one small named asyncio actor per job that hears each replica
batch start and end, holds long batches' rows, and hands copies of stragglers to batches that have run at the
job's tail; how the replicas use it is in s2d.actors.stragglers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from s2d.engine.core.stragglers import HeldBatch, StragglerPolicy, ask_again_in, pick_straggler, pool_median

DURATIONS_KEPT = 256  # the pool's recent batch times the median is taken over (bounded memory, follows drift)
COPIES_AT_ONCE = 4  # stragglers one finished batch copies at once (its engine runs them side by side)


@dataclass
class _Entry:
    """A registered batch: who holds it, its rows (what a helper needs), and how it ends."""

    holder: str
    rows: list[dict[str, Any]]
    started: float
    outcome: asyncio.Future  # a posted copy's table; None when the holder finished first
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set when its holder returned it
    helpers: set[str] = field(default_factory=set)
    reissued_at: float | None = None

    def close(self) -> None:
        if not self.outcome.done():
            self.outcome.set_result(None)
        self.closed.set()


class StragglerCoordinator:
    """The job's straggler coordinator (one small named asyncio actor): the batches running now, the rows handed
    out so far (the tail: `expected_rows`, every row the job sends to a replica, all started), registered batches'
    rows, the pool's recent batch times, and the counts that reach metrics.json."""

    def __init__(self, factor: float, min_s: float, expected_rows: int | None):
        self.policy = StragglerPolicy(factor, min_s)
        self.expected_rows = expected_rows  # None until the job's inputs are partitioned (`expect`): no tail yet
        self._running: dict[str, tuple[str, float]] = {}  # key -> (holder, started): every batch running now
        self._started_rows = 0  # rows of the batches started (a retried batch counts once: it is still running)
        self._held: dict[str, _Entry] = {}
        self._durations: deque[float] = deque(maxlen=DURATIONS_KEPT)
        self._counts = {"reissued": 0, "won": 0}
        self._change = asyncio.Event()  # set (and replaced) when a batch registers, ends or gets a copy's table

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def expect(self, rows: int) -> None:
        """The rows this run sends to the replicas, once its inputs are partitioned (beside the replicas' start)."""
        self.expected_rows = rows
        self._changed()

    async def started(self, key: str, holder: str, rows: int) -> None:
        """A replica took a batch from Ray Data (or Ray retried it on a restarted one)."""
        if key not in self._running:
            self._started_rows += rows
        self._running[key] = (holder, time.monotonic())

    async def hold(self, key: str, holder: str, rows: list[dict[str, Any]], age_s: float) -> Any:
        """Register a batch its holder has run for `age_s`; returns a helper's table if one is posted before the
        holder finishes, else None. A batch registered again (Ray retried it on a restarted replica) replaces the
        old entry."""
        if (previous := self._held.pop(key, None)) is not None:
            previous.close()
        entry = _Entry(holder, rows, time.monotonic() - age_s, asyncio.get_running_loop().create_future())
        self._held[key] = entry
        self._changed()
        return await entry.outcome

    async def finished(self, key: str, seconds: float, helper_won: bool) -> None:
        """The holder returned the batch (its own table, or a helper's): a copy still running is aborted."""
        self._running.pop(key, None)
        if (entry := self._held.pop(key, None)) is not None:
            entry.close()
        if helper_won:
            self._counts["won"] += 1
        else:
            self._durations.append(seconds)
        self._changed()

    async def claim(self, helper: str) -> list[tuple[str, list[dict[str, Any]]]] | float | None:
        """For a batch of `helper` that has run: the stragglers to copy (their keys and rows, at most
        COPIES_AT_ONCE, run at once), None: return now (not the tail, or nothing left to wait for), or, after
        waiting here until a batch registers or ends or until a running one may have become a straggler (at most
        MAX_ASK_AGAIN_S), 0.0: ask again."""
        answer = self._claim_now(helper)
        if isinstance(answer, float):
            change = self._change
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(change.wait(), timeout=answer)
            answer = self._claim_now(helper)
        return 0.0 if isinstance(answer, float) else answer

    def _claim_now(self, helper: str) -> list[tuple[str, list[dict[str, Any]]]] | float | None:
        """`claim`'s decision, or the seconds until it may change without a message (a batch ageing past the
        threshold)."""
        others = {key: run for key, run in self._running.items() if run[0] != helper}
        if self.expected_rows is None or self._started_rows < self.expected_rows or not others:
            return None
        now, median = time.monotonic(), pool_median(self._durations)
        running = [self._view(key, holder, now - since, now) for key, (holder, since) in others.items()]
        registered = [batch for batch in running if batch.key in self._held]  # a copy needs the batch's rows
        copies = []
        while len(copies) < COPIES_AT_ONCE:
            chosen = pick_straggler(registered, median, helper, self.policy)
            if chosen is None:
                break
            registered.remove(chosen)
            entry = self._held[chosen.key]
            entry.helpers.add(helper)
            entry.reissued_at = now
            self._counts["reissued"] += 1
            copies.append((chosen.key, entry.rows))
        return copies or ask_again_in(running, median, helper, self.policy)

    def _view(self, key: str, holder: str, age_s: float, now: float) -> HeldBatch:
        entry = self._held.get(key)
        if entry is None:
            return HeldBatch(key, holder, age_s)
        reissued = None if entry.reissued_at is None else now - entry.reissued_at
        return HeldBatch(key, holder, age_s, frozenset(entry.helpers), reissued)

    async def post(self, key: str, helper: str, table: Any, seconds: float) -> bool:
        """A helper's finished copy: handed to the holder if it still runs the batch and no copy came first."""
        entry = self._held.get(key)
        if entry is None or helper not in entry.helpers or entry.outcome.done():
            return False
        entry.outcome.set_result(table)
        self._durations.append(seconds)
        self._changed()
        return True

    async def abandon(self, key: str, helper: str) -> None:
        """A helper's copy failed: another replica may try."""
        if (entry := self._held.get(key)) is not None:
            entry.helpers.discard(helper)
            if not entry.helpers:
                entry.reissued_at = None
            self._changed()

    async def released(self, key: str) -> None:
        """Returns once the batch's holder has returned it (at once if it is not registered)."""
        if (entry := self._held.get(key)) is not None:
            await entry.closed.wait()

    async def counts(self) -> dict[str, int]:
        return dict(self._counts)
