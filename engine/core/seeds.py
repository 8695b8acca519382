"""Seeds of the distillation (`eval.seeds: k`), their pure parts: which training seed and which folders each seed
gets, the spread of the distilled System 1's scores across them, and the report's table of them.

One distillation run moves by the fine-tune's own randomness (adapter initialisation, batch order, dropout): the
demo's distilled accuracy read 19% to 29% over runs of the same job while its base stayed at 8%. k seeds train k
models on the same accepted pairs, seed s with `train.seed + s`, and evaluate each on the same held-out inputs;
the base System 1 and System 2 do not depend on the training seed, so they run once. Seed 0 is the job as it was
(`<out>/model/`, `<out>/train_ray/`): a job with one seed, `make demo` and a resume see no change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from s2d.engine.core.stats import format_difference, format_p, format_rate

MODEL_FOLDER = "model"  # seed 0's model, where a one-seed job has always kept it
TRAIN_RUN_FOLDER = "train_ray"  # seed 0's Ray Train run (its checkpoints: what a killed train resumes from)


def _check(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"a seed index is 0 or more, got {seed}")


def training_seed(base: int, seed: int) -> int:
    """The `train.seed` that seed `seed` (0..k-1) of a job trains with: the job's own, offset by the seed."""
    _check(seed)
    return base + seed


def model_folder(seed: int) -> str:
    """Seed `seed`'s model folder under `<out>`: `model` for seed 0 (where a one-seed job keeps it), `model-seed<s>`
    for the others."""
    _check(seed)
    return MODEL_FOLDER if seed == 0 else f"{MODEL_FOLDER}-seed{seed}"


def train_run_folder(seed: int) -> str:
    """Seed `seed`'s Ray Train run folder under `<out>`: each seed has its own, since a run folder holds one
    fine-tune's checkpoints and another seed's fingerprint would clear it."""
    _check(seed)
    return TRAIN_RUN_FOLDER if seed == 0 else f"{TRAIN_RUN_FOLDER}-seed{seed}"


def seed_kind(seed: int) -> str:
    """The evaluation's key of seed `seed`'s distilled System 1: `distilled` for seed 0 (the report's own row)."""
    _check(seed)
    return "distilled" if seed == 0 else f"distilled_seed{seed}"


@dataclass(frozen=True)
class Spread:
    """Several seeds' values of one measure: their mean, lowest and highest."""

    mean: float
    low: float
    high: float
    count: int
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"values": list(self.values)}


def spread(values: Iterable[float | None]) -> Spread | None:
    """The spread of the values that exist (a seed without the measure, e.g. no agreement reference, is left out);
    None when there is none."""
    present = [float(value) for value in values if value is not None and not math.isnan(value)]
    if not present:
        return None
    return Spread(sum(present) / len(present), min(present), max(present), len(present), tuple(present))


SEED_FIELDS = ("accuracy", "ci_low", "ci_high", "correct", "total", "agreement", "agreement_low", "agreement_high")


def seed_entry(seed: int, base_seed: int, model_dir: str, score: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One seed's figures for metrics.json: its index, training seed, model folder and distilled scores (`score`:
    a SystemScore as a dict), with `extra` (its paired difference with the base, say)."""
    return {
        "seed": seed,
        "train_seed": training_seed(base_seed, seed),
        "model_dir": model_dir,
        **{field: score.get(field) for field in SEED_FIELDS},
        **extra,
    }


def seeds_summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """metrics.json's `seeds`: how many, each seed's entry, and the spread of accuracy and agreement across them
    (None for a measure no seed has)."""
    accuracy = spread(entry.get("accuracy") for entry in entries)
    agreement = spread(entry.get("agreement") for entry in entries)
    return {
        "count": len(entries),
        "per_seed": [dict(entry) for entry in entries],
        "accuracy": accuracy.as_dict() if accuracy else None,
        "agreement": agreement.as_dict() if agreement else None,
    }


def format_spread(summary: Mapping[str, Any] | None, digits: int = 1) -> str:
    """'24.3% (21.0-26.0%, 3 seeds)', or 'n/a'."""
    if not summary:
        return "n/a"
    mean, low, high = (100 * summary[key] for key in ("mean", "low", "high"))
    return f"{mean:.{digits}f}% ({low:.{digits}f}-{high:.{digits}f}%, {summary['count']} seeds)"


SEEDS_NOTES = (
    "Seeds (eval.seeds): the distillation trained {count} times on the same accepted pairs, seed s with train.seed + "
    "s, each distilled System 1 evaluated on the same held-out inputs; base System 1 and System 2 do not depend on "
    "the training seed and ran once. The distilled row above and the paired comparisons below are seed 0's. The "
    "spread is the mean and the lowest-highest value across seeds: how much one run of this job moves by the "
    "fine-tune's own randomness, beside each run's interval over inputs."
)


def seeds_table(runs: Sequence[Mapping[str, Any]], with_run: bool) -> list[str]:
    """Each seed's distilled accuracy and agreement, its paired difference with the base, and the spread."""
    seeded = [metrics for metrics in runs if (metrics.get("seeds") or {}).get("count", 0) > 1]
    if not seeded:
        return []
    counts = sorted({metrics["seeds"]["count"] for metrics in seeded})
    lines = [
        "",
        SEEDS_NOTES.format(count=" or ".join(str(count) for count in counts)),
        "",
        ("| run " if with_run else "")
        + "| seed | train.seed | distilled accuracy [95% CI] | agrees with System 2 [95% CI] "
        + "| versus base System 1, paired | McNemar exact p |",
        ("|---" if with_run else "") + "|---:|---:|---:|---:|---:|---:|",
    ]
    for metrics in seeded:
        run = f"| {metrics['run']} " if with_run else ""
        for entry in metrics["seeds"]["per_seed"]:
            versus = entry.get("versus_base")
            paired = (format_difference(versus), format_p(versus["p_value"])) if versus else ("n/a", "n/a")
            lines.append(
                f"{run}| {entry['seed']} | {entry['train_seed']} "
                f"| {format_rate(entry.get('accuracy'), entry.get('ci_low'), entry.get('ci_high'))} "
                f"| {format_rate(entry.get('agreement'), entry.get('agreement_low'), entry.get('agreement_high'))} "
                f"| {paired[0]} | {paired[1]} |"
            )
        summary = metrics["seeds"]
        lines.append(
            f"{run}| **spread: mean (min-max)** | | **{format_spread(summary.get('accuracy'))}** "
            f"| **{format_spread(summary.get('agreement'))}** | | |"
        )
    return lines
