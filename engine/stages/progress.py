"""Progress accounting of the generate stage: totals, rates and ETA, as one object the display and metrics share.

Pure logic (no Ray, no tqdm at import): the driver feeds it each batch of curated rows; the tqdm bar,
the Ray metrics exporter (`s2d.cluster.metrics`) and `<out>/metrics.json` all read the same `snapshot()`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

METRICS_FILE = "metrics.json"


@dataclass
class JobProgress:
    """Running totals of one generate run.

    `total_inputs` counts the inputs this run has to process (already committed shards excluded, reported
    apart as `skipped_inputs`); rates are over the time since the object was created.
    """

    total_inputs: int
    skipped_inputs: int = 0
    clock: Callable[[], float] = time.monotonic
    inputs: int = 0
    samples: int = 0
    accepted: int = 0
    rejected: int = 0
    quarantined: int = 0  # bad inputs: not counted in the accept rate, which is about self-consistency
    tokens: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    # Per replica, how full it keeps its engine (s2d.actors.occupancy.merge: mean running sequences as % of the
    # engine's cap, busy and fed), as the job's ledger last reported it.
    occupancy: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        if self.total_inputs < 0 or self.skipped_inputs < 0:
            raise ValueError("input counts cannot be negative")
        self.started = self.clock()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Count curated rows: `status`, `reason`, `num_samples`, `system2_tokens` (mean tokens per sample)."""
        for row in rows:
            self.inputs += 1
            samples = int(row.get("num_samples") or 0)
            self.samples += samples
            self.tokens += float(row.get("system2_tokens") or 0.0) * samples
            if row["status"] == "accepted":
                self.accepted += 1
            elif row["status"] == "quarantined":
                self.quarantined += 1
                self.reasons[row.get("reason") or "unknown"] += 1
            else:
                self.rejected += 1
                self.reasons[row.get("reason") or "unknown"] += 1

    def add_counts(self, part: dict[str, Any]) -> None:
        """Count a part of curated rows by its totals (s2d.engine.data.shard_tasks.PART_COUNTS_SCHEMA): what the driver
        receives instead of the rows."""
        self.inputs += int(part["rows"])
        self.samples += int(part["samples"])
        self.tokens += float(part["tokens"])
        self.accepted += int(part["accepted"])
        self.rejected += int(part["rejected"])
        self.quarantined += int(part["quarantined"])
        self.reasons.update(json.loads(part["reasons"]))

    @property
    def elapsed(self) -> float:
        return max(self.clock() - self.started, 0.0)

    def snapshot(self) -> dict[str, Any]:
        """The figures every view shows. Rates are None until something was counted."""
        elapsed = self.elapsed
        done = self.accepted + self.rejected
        remaining = max(self.total_inputs - self.inputs, 0)
        inputs_per_s = self.inputs / elapsed if elapsed > 0 and self.inputs else None
        return {
            "total_inputs": self.total_inputs,
            "skipped_inputs": self.skipped_inputs,
            "inputs": self.inputs,
            "samples": self.samples,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "tokens": round(self.tokens),
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(self.tokens / elapsed, 2) if elapsed > 0 and self.tokens else None,
            "inputs_per_s": round(inputs_per_s, 4) if inputs_per_s else None,
            "accept_rate": round(self.accepted / done, 4) if done else None,
            "eta_s": round(remaining / inputs_per_s, 1) if inputs_per_s else (0.0 if not remaining else None),
            "occupancy_by_replica": self.occupancy,
            "occupancy_mean_pct": _mean_of(self.occupancy, "mean_pct"),
            "occupancy_fed_pct": _mean_of(self.occupancy, "fed_pct"),
        }

    def postfix(self) -> dict[str, str]:
        """The short fields of the progress bar."""
        snap = self.snapshot()
        fields = {"accepted": str(snap["accepted"]), "rejected": str(snap["rejected"])}
        if snap["quarantined"]:
            fields["quarantined"] = str(snap["quarantined"])
        if snap["accept_rate"] is not None:
            fields["accept"] = f"{snap['accept_rate']:.0%}"
        if snap["tokens_per_s"] is not None:
            fields["tok/s"] = f"{snap['tokens_per_s']:.0f}"
        shown = [figures["mean_pct"] for figures in self.occupancy.values() if figures.get("mean_pct") is not None]
        if shown:  # each replica's engine, % of its sequence cap (more than 4: the lowest and the highest)
            pcts = shown if len(shown) <= 4 else [min(shown), max(shown)]
            fields["engine"] = ("/" if len(shown) <= 4 else "-").join(f"{pct:.0f}" for pct in pcts) + "%"
        return fields


def _mean_of(occupancy: dict[str, dict[str, Any]], key: str) -> float | None:
    """The replicas' mean of one occupancy figure, None when no replica has it."""
    values = [figures[key] for figures in occupancy.values() if figures.get(key) is not None]
    return round(sum(values) / len(values), 1) if values else None


def write_metrics(out: Any, progress: JobProgress, extra: dict[str, Any] | None = None) -> str:
    """Write `<out>/metrics.json` (a path or a filesystem URI; atomically: a reader never sees half a file)."""
    from s2d.engine.data.storage import OutputLocation

    location = OutputLocation.of(out)
    content = {"stage": "generate", **progress.snapshot(), **(extra or {})}
    location.write_bytes_atomic((json.dumps(content, indent=2, sort_keys=True) + "\n").encode(), METRICS_FILE)
    return location.path(METRICS_FILE)


class ProgressDisplay:
    """The one progress bar of a generate run (tqdm), fed from a JobProgress."""

    def __init__(self, progress: JobProgress, enabled: bool = True):
        from tqdm.auto import tqdm

        from s2d.engine.stages.console import terminal

        self.progress = progress
        self._bar = tqdm(
            total=progress.total_inputs,
            desc="generate+curate",
            unit="input",
            disable=not enabled,
            dynamic_ncols=True,
            file=terminal(),
        )
        self.shown = 0  # inputs already on the bar (a disabled tqdm keeps no count)

    def refresh(self) -> None:
        self._bar.update(self.progress.inputs - self.shown)
        self.shown = self.progress.inputs
        self._bar.set_postfix(self.progress.postfix(), refresh=False)

    def close(self) -> None:
        self.refresh()
        self._bar.close()
