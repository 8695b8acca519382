"""Export a generate run's progress figures as Ray metrics, which Ray serves to Prometheus.

The driver sets gauges named `s2d_<figure>` from `JobProgress.snapshot()`; Ray's metrics agent on the
driver's node exposes them with the other Ray metrics (scrape config in docs/cluster.md), tagged by job
output directory so two jobs on one cluster stay apart.
"""

from __future__ import annotations

from typing import Any

# snapshot key -> metric description. Every one is a gauge: a rerun or resume starts its counts afresh.
EXPORTED = {
    "total_inputs": "inputs this run processes",
    "inputs": "inputs generated and curated so far",
    "samples": "samples generated so far (n per input)",
    "accepted": "inputs accepted by self-consistency",
    "rejected": "inputs rejected (tie, below threshold, no answer)",
    "quarantined": "inputs set aside unprocessed (bad row, too long for the context)",
    "tokens": "generated tokens, reasoning included",
    "tokens_per_s": "generated tokens per second since the run started",
    "accept_rate": "accepted / curated inputs",
    "eta_s": "estimated seconds to finish",
}


def metric_name(key: str) -> str:
    return f"s2d_{key}"


class RayMetricsExporter:
    """Gauges of one run; `update` is cheap enough to call on every batch."""

    def __init__(self, job: str):
        from ray.util.metrics import Gauge

        self._tags = {"job": job}
        self._gauges = {
            key: Gauge(metric_name(key), description=text, tag_keys=("job",)) for key, text in EXPORTED.items()
        }

    def update(self, snapshot: dict[str, Any]) -> None:
        for key, gauge in self._gauges.items():
            value = snapshot.get(key)
            if value is not None:
                gauge.set(float(value), tags=self._tags)
