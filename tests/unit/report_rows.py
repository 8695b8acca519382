"""A system's row of an eval's metrics.json (`systems`), for unit tests of the reports: 4 held-out inputs, the
given accuracy, and with `agreement` its agreement fields too."""

from __future__ import annotations

from typing import Any


def system_row(name: str, kind: str, accuracy: float, agreement: float | None = None) -> dict[str, Any]:
    row = {
        "system": name,
        "kind": kind,
        "accuracy": accuracy,
        "correct": accuracy * 4,
        "total": 4,
        "samples": 4,
        "tokens_per_answer": 3.0,
        "ci_low": 0.0,
        "ci_high": 1.0,
        "latency_s": 0.1,
    }
    if agreement is not None:
        row |= {"agreement": agreement, "agreement_low": 0.1, "agreement_high": 0.9}
    return row
