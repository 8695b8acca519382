"""What each stage returns to the Python API (s2d.engine.stages.api) and the CLI: typed results, one per stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s2d.engine.core.spec import JobSpec


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` committed to `out`: counts over the whole output (committed before this run included)."""

    inputs: int
    skipped_committed: int  # inputs of shards an earlier run had committed (resumed, not regenerated)
    accepted: int
    rejected: int
    quarantined: int
    reasons: dict[str, int]  # rejection and quarantine reasons of the inputs this run produced
    seconds: float
    out: str


@dataclass(frozen=True)
class TrainResult:
    """The fine-tune's outcome; `metrics` is `<out>/model/train_metrics.json` whole."""

    model_dir: str
    steps: int
    examples: int
    losses: list[float]
    resumed_from_step: int | None
    merged_dir: str | None
    seconds: float
    metrics: dict[str, Any] = field(repr=False)
    # eval.seeds > 1: each seed's fine-tune (seed, train_seed, model_dir, steps, losses, reused); the fields above
    # are seed 0's. Empty for one seed.
    seeds: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class EvalResult:
    """The held-out comparison; `metrics` is `<out>/eval/metrics.json` whole, `systems` its rows."""

    report: str  # report.md
    chart: str  # report.png
    systems: list[dict[str, Any]]
    seconds: float
    metrics: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RoundsResult:
    """A rounds job's report across rounds (`<out>/rounds.md`, `rounds.json`); `rows` are rounds.json's rows."""

    report: str  # rounds.md
    data: str  # rounds.json
    rows: list[dict[str, Any]] = field(repr=False)
    reused: list[int]  # rounds an earlier run had finished: read back, not redone


@dataclass(frozen=True)
class PilotResult:
    """`s2d pilot`'s outcome; `metrics` is `<out>/pilot/metrics.json` whole."""

    verdict: str  # distils | does not distil | inconclusive (engine/core/pilot.py: the rule)
    because: str  # the numbers behind it, one line
    report: str  # <out>/pilot/report.md
    metrics_path: str
    seconds: float
    metrics: dict[str, Any] = field(repr=False)


StageResult = GenerateResult | TrainResult | EvalResult


@dataclass(frozen=True)
class JobResult:
    """A job's stages; for a rounds job, the stages of its last round run now and the report across rounds."""

    spec: JobSpec = field(repr=False)
    out: str
    generate: GenerateResult | None = None
    train: TrainResult | None = None
    eval: EvalResult | None = None
    rounds: RoundsResult | None = None
