"""How full a replica keeps its engine: the running-sequences time series and its means, as % of the engine's cap.

On a GPU an engine's throughput grows with the sequences it runs at once, up to its cap (vLLM's max_num_seqs), so
"is the engine fed" is the figure that decides a job's speed there, and it can be measured on any machine. The
replica samples, every `interval_s`, the sequences its engine holds unfinished (running or waiting: above the cap the
rest wait, so running = min(held, cap)) and how many batches it holds. Two means come out of it:

- `mean_pct`: while the replica held at least one batch (its busy time, the job's tail included);
- `fed_pct`: while it held more than one, i.e. work waited behind the batch it runs: outside the job's last batch.
  Below ~100% here an engine idles while work waits (the figure continuous admission is judged by).

Pure bookkeeping (no Ray, no vLLM); the summaries are sums, so a replica's restarts merge by adding them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

SERIES_SAMPLES = 14_400  # the time series kept per replica: the last hour at 0.25 s (bounded memory)


class OccupancyRecorder:
    """Samples, counts and keeps the recent series; `summary()` is cheap and plain data (it travels to the ledger)."""

    def __init__(self, cap: int, clock: Callable[[], float] = time.monotonic):
        if cap < 1:
            raise ValueError(f"an engine's sequence cap must be >= 1, not {cap}")
        self.cap, self.clock = cap, clock
        self.started = clock()
        self.series: deque[tuple[float, int, int]] = deque(maxlen=SERIES_SAMPLES)  # (seconds, sequences, batches)
        self._sums = {"busy_samples": 0, "busy_running": 0, "fed_samples": 0, "fed_running": 0}
        self._lock = threading.Lock()

    def record(self, sequences: int, batches: int) -> None:
        running = min(max(sequences, 0), self.cap)
        with self._lock:
            self.series.append((round(self.clock() - self.started, 2), sequences, batches))
            if batches >= 1:
                self._sums["busy_samples"] += 1
                self._sums["busy_running"] += running
            if batches >= 2:
                self._sums["fed_samples"] += 1
                self._sums["fed_running"] += running

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {"cap": self.cap, **self._sums}


def merge(summaries: Iterable[dict[str, int]]) -> dict[str, Any]:
    """One replica's figures over its lives (a restarted replica reports afresh): mean running sequences and % of
    the cap, busy and fed (None where it never was)."""
    summaries = list(summaries)
    if not summaries:
        return {"cap": None, "mean_running": None, "mean_pct": None, "fed_pct": None, "busy_samples": 0}
    cap = max(summary["cap"] for summary in summaries)
    total = {key: sum(summary[key] for summary in summaries) for key in summaries[0] if key != "cap"}

    def mean(running: str, samples: str) -> float | None:
        return total[running] / total[samples] if total[samples] else None

    busy, fed = mean("busy_running", "busy_samples"), mean("fed_running", "fed_samples")
    return {
        "cap": cap,
        "mean_running": None if busy is None else round(busy, 1),
        "mean_pct": None if busy is None else round(100 * busy / cap, 1),
        "fed_pct": None if fed is None else round(100 * fed / cap, 1),
        "busy_samples": total["busy_samples"],
    }


def by_replica(reports: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """`{replica: {life: summary}}` (the ledger's) -> `{"replica 1": merged, ...}` in the order replicas reported."""
    return {f"replica {index}": merge(lives.values()) for index, lives in enumerate(reports.values(), start=1)}


def start_sampling(
    recorder: OccupancyRecorder,
    sequences: Callable[[], int],
    batches: Callable[[], int],
    stopped: threading.Event,
    interval_s: float = 0.25,
    on_tick: Callable[[], None] | None = None,
    tick_every_s: float = 5.0,
) -> threading.Thread:
    """Sample on a daemon thread until `stopped`; `on_tick` (a report to the ledger) every `tick_every_s`."""

    def sample() -> None:
        last_tick = time.monotonic()
        while not stopped.wait(interval_s):
            try:
                recorder.record(sequences(), batches())
            except Exception:  # noqa: BLE001 - the engine going away under us: skip the sample
                continue
            if on_tick is not None and time.monotonic() - last_tick >= tick_every_s:
                last_tick = time.monotonic()
                try:
                    on_tick()
                except Exception:  # noqa: BLE001 - a report lost (the ledger gone at the job's end) costs nothing
                    pass

    thread = threading.Thread(target=sample, name="s2d-occupancy", daemon=True)
    thread.start()
    return thread
