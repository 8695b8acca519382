"""A finished evaluation's metrics.json as the report and its chart read it: loaded, older files' gaps filled in,
each system named and classed.

`s2d eval` writes `<out>/eval/metrics.json` (engine/stages/evaluate.py); the Markdown report
(engine/stages/report.py) and the PNG chart (engine/stages/chart.py) read it through these functions only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2d.engine.core.stats import wilson_interval

SHORT_NAMES = {"system1": "System 1", "system2": "System 2", "distilled": "distilled", "teacher_system1": "teacher S1"}


def short_name(metrics: dict[str, Any], kind: str) -> str:
    """A system's name on the chart: with a student of its own (train.model), its base System 1 says so."""
    return "student S1" if kind == "system1" and metrics.get("student") else SHORT_NAMES[kind]


def model_label(metrics: dict[str, Any]) -> str:
    """The run's model: the teacher, and the student it distilled into when that is another model."""
    student = metrics.get("student")
    return f"{metrics['model']} -> {student}" if student else metrics["model"]


def system_kind(score: dict[str, Any]) -> str:
    """system1 / system2 / distilled; metrics written before `kind` existed are read from the system's name."""
    if score.get("kind") in SHORT_NAMES:
        return score["kind"]
    name = score["system"].lower()
    return "distilled" if name.startswith("distilled") else "system2" if name.startswith("system 2") else "system1"


def normalised_systems(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Every system with kind, CI and batched latency filled in (older metrics.json files lack some)."""
    systems = []
    for score in metrics["systems"]:
        kind = system_kind(score)
        samples = int(score.get("samples") or score["total"])
        low, high = wilson_interval(score["accuracy"] * samples, samples)
        latency = score.get("latency_s", (metrics.get("seconds_per_input") or {}).get(kind))
        systems.append(
            {
                **score,
                "kind": kind,
                "ci_low": score.get("ci_low", low),
                "ci_high": score.get("ci_high", high),
                "latency_s": latency,
            }
        )
    return systems


def load_metrics(out: Path) -> dict[str, Any]:
    path = Path(out) / "eval" / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation in {out} ({path} is missing): run `s2d eval` on that job first")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(metrics, dict) or not metrics.get("systems"):
        raise ValueError(f"{path} has no 'systems' to report")
    metrics.setdefault("run", str(out))
    return metrics


def comparisons(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's paired comparisons, accuracy first (none in metrics written before they existed)."""
    return sorted(metrics.get("comparisons") or [], key=lambda comparison: comparison["measure"] != "accuracy")
