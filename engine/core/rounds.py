"""Iterated System 2 distillation, its pure parts: each round's job, when a round counts as done, and the table
across rounds (every number with its 95% interval, the input as the unit: `s2d.engine.core.stats`).

Round 1 is the job as written, in `<out>/round-1/`. Round r+1 samples the method from round r's distilled model (a
local folder: the merged LoRA, or a full fine-tune's model), and trains the student's base again on its own pairs:
each round's distilled model is base + one round's data, so two rounds differ by their data alone, and no model is
fine-tuned on its own outputs twice over (STaR, Zelikman et al. 2022, restarts from the base each iteration for the
same reason). The held-out inputs are the same in every round, so the rounds' evaluations compare.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from s2d.engine.core.spec import JobSpec, parse_spec
from s2d.engine.core.stats import Z95, format_rate, wilson_interval

ROUNDS_REPORT = "rounds.md"
ROUNDS_DATA = "rounds.json"


def round_dir(out: str, round_number: int) -> str:
    """Round r's output folder, a whole s2d output of its own: `<out>/round-<r>`."""
    return posixpath.join(out.rstrip("/") or "/", f"round-{round_number}")


def round_spec(spec: JobSpec, round_number: int, sampler: str | None) -> JobSpec:
    """Round r's job. Round 1 is `spec` itself; a later round samples from `sampler` (round r-1's distilled model, a
    local folder) and trains the student's base (train.model, else the job's model) again. With more than one round
    a LoRA job also merges its adapter: the merged copy is the next round's sampler."""
    if round_number < 1 or round_number > spec.rounds:
        raise ValueError(f"round {round_number} is not one of the job's rounds 1..{spec.rounds}")
    if (round_number == 1) != (sampler is None):
        raise ValueError("round 1 samples from the job's model; every later round from the round before it")
    values: dict[str, Any] = {"out": round_dir(spec.out, round_number), "rounds": 1}
    if spec.rounds > 1 and spec.train.mode == "lora":
        values["train.merge"] = True
    if sampler is not None:
        values["model"] = sampler
        values["train.model"] = spec.student  # the base again, not round r-1's model
    return parse_spec(spec.model_dump(mode="json"), values=values, source=f"round {round_number}")


STAGES = ("generate", "train", "eval")


def job_digest(spec: JobSpec, exclude: frozenset[str] = frozenset()) -> str:
    """A round's job (every section but `exclude`; `out` names where it is, not what it is): a changed job redoes
    the stages it changes."""
    text = json.dumps(spec.model_dump(mode="json", exclude={"out", *exclude}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def round_keys(spec: JobSpec, fingerprint: str) -> dict[str, str]:
    """What a finished round is recorded with: its samples' fingerprint (generate's, the sampler's weights in it),
    the job without its eval section (what its model depends on) and the whole job."""
    return {"fingerprint": fingerprint, "training": job_digest(spec, frozenset({"eval"})), "job": job_digest(spec)}


def stages_to_redo(record: Mapping[str, Any] | None, keys: Mapping[str, str]) -> tuple[str, ...]:
    """The stages of a round to run now, given what an earlier run recorded for it: none when it finished this very
    job; only eval when just the eval section changed (retraining would replace its model, and so the next round's
    sampler, for nothing); train and eval when the job changed otherwise but its samples did not; every stage (each
    resuming what it committed) when the samples differ or the round never finished."""
    if not record or record.get("fingerprint") != keys["fingerprint"]:
        return STAGES
    if record.get("training") != keys["training"]:
        return ("train", "eval")
    if record.get("job") != keys["job"]:
        return ("eval",)
    return ()


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None: not measured in this round (e.g. no input had a System 2 reference answer)
    low: float | None
    high: float | None

    @classmethod
    def of(cls, value: Any, low: Any, high: Any) -> Estimate:
        return cls(*(None if x is None else float(x) for x in (value, low, high)))


NOT_MEASURED = Estimate(None, None, None)


def tokens_per_sample(groups: Iterable[tuple[float, int]], z: float = Z95) -> Estimate:
    """Mean System 2 tokens per sample over (mean tokens per sample, samples) of each input, with the input as the
    unit: the ratio estimator's linearised variance (as `stats.clustered_interval` takes it for a proportion) and a
    normal interval; a mean of one input has no spread to estimate (its interval is the value itself)."""
    pairs = [(float(mean) * int(samples), int(samples)) for mean, samples in groups if samples and samples > 0]
    samples = sum(m for _, m in pairs)
    if not samples:
        return NOT_MEASURED
    rate = sum(t for t, _ in pairs) / samples
    inputs = len(pairs)
    if inputs < 2:
        return Estimate(rate, rate, rate)
    residual = sum((t - rate * m) ** 2 for t, m in pairs)
    half = z * math.sqrt(inputs / (inputs - 1) * residual / samples**2)
    return Estimate(rate, max(0.0, rate - half), rate + half)


def _system(metrics: Mapping[str, Any], kind: str, majority: bool | None = None) -> Mapping[str, Any] | None:
    for score in metrics.get("systems", []):
        if score.get("kind") != kind:
            continue
        if majority is None or ("majority of" in score.get("system", "")) == majority:
            return score
    return None


def _accuracy(score: Mapping[str, Any] | None) -> Estimate:
    return Estimate.of(score["accuracy"], score["ci_low"], score["ci_high"]) if score else NOT_MEASURED


def _agreement(score: Mapping[str, Any] | None) -> Estimate:
    if not score or score.get("agreement") is None:
        return NOT_MEASURED
    return Estimate.of(score["agreement"], score["agreement_low"], score["agreement_high"])


@dataclass(frozen=True)
class RoundRow:
    """One round of the table across rounds (rounds.json holds these, rounds.md renders them)."""

    round: int
    sampler: str  # the model that sampled the method: the job's model, then the round before's distilled model
    fingerprint: str  # the round's samples (generate's fingerprint, the sampler's weights in it)
    training: str  # job_digest of the round's job without its eval section
    job: str  # job_digest of the round's whole job
    inputs: int  # inputs sampled (accepted + rejected; quarantined rows never reached the model)
    accepted: int
    accepted_share: Estimate  # accepted / inputs, Wilson
    tokens_per_sample: Estimate  # System 2 tokens per sample during generation
    system2_accuracy: Estimate  # the sampler's System 2 on held-out inputs (majority of n; single sample if n = 1)
    system2_single: Estimate  # the sampler's System 2, one sample (mean over its samples)
    base_system1: Estimate  # the student's base, direct (the same in every round)
    distilled_accuracy: Estimate
    distilled_agreement: Estimate  # with this round's System 2 (the sampler's majority at the job's threshold)
    eval_inputs: int
    reference_inputs: int  # held-out inputs where this round's System 2 gave a reference answer


def round_row(
    round_number: int,
    sampler: str,
    keys: Mapping[str, str],
    counts: Mapping[str, int],
    token_groups: Iterable[tuple[float, int]],
    metrics: Mapping[str, Any],
) -> RoundRow:
    """A round's row from its manifest's counts, each sampled input's (mean tokens per sample, samples) and its
    eval/metrics.json; `keys` are the round's `round_keys`."""
    accepted, rejected = int(counts.get("accepted", 0)), int(counts.get("rejected", 0))
    inputs = accepted + rejected
    share = Estimate(accepted / inputs, *wilson_interval(accepted, inputs)) if inputs else NOT_MEASURED
    majority = _system(metrics, "system2", majority=True)
    single = _system(metrics, "system2", majority=False)
    distilled = _system(metrics, "distilled")
    return RoundRow(
        round=round_number,
        sampler=sampler,
        fingerprint=keys["fingerprint"],
        training=keys["training"],
        job=keys["job"],
        inputs=inputs,
        accepted=accepted,
        accepted_share=share,
        tokens_per_sample=tokens_per_sample(token_groups),
        system2_accuracy=_accuracy(majority or single),
        system2_single=_accuracy(single),
        base_system1=_accuracy(_system(metrics, "system1")),
        distilled_accuracy=_accuracy(distilled),
        distilled_agreement=_agreement(distilled),
        eval_inputs=int(metrics.get("eval_inputs", 0)),
        reference_inputs=int((metrics.get("agreement_reference") or {}).get("inputs", 0)),
    )


def row_from_json(data: Mapping[str, Any]) -> RoundRow:
    """A RoundRow as rounds.json holds it (ValueError, one line, for anything else)."""
    try:
        fields = {
            key: Estimate(**value) if isinstance(value, dict) else value
            for key, value in data.items()
            if key in RoundRow.__dataclass_fields__
        }
        return RoundRow(**fields)
    except TypeError as error:
        raise ValueError(f"not a round of {ROUNDS_DATA}: {error}") from None


def rounds_json(rows: list[RoundRow], rounds: int) -> str:
    return json.dumps({"rounds": rounds, "rows": [asdict(row) for row in rows]}, indent=2) + "\n"


def _percent(estimate: Estimate) -> str:
    return format_rate(estimate.value, estimate.low, estimate.high)


def _tokens(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    return f"{estimate.value:.1f} [{estimate.low:.1f}, {estimate.high:.1f}]"


def render_rounds(rows: list[RoundRow], rounds: int) -> str:
    """rounds.md: one row per round, every number with its 95% interval (the input as the unit)."""
    done = len(rows)
    lines = [
        f"# Iterated distillation: {done} of {rounds} rounds",
        "",
        "Round 1 samples the job's model; round r+1 samples round r's distilled model and trains the student's base "
        "again on its own pairs. Accuracy and agreement are on the same held-out inputs in every round; agreement is "
        "with that round's System 2 (the sampler's majority at the job's threshold). Intervals: 95%, the input as "
        "the unit (Wilson; tokens: the ratio estimator's normal interval).",
        "",
        "| round | sampled from | accepted inputs [95% CI] | System 2 tokens per sample | System 2 of the sampler "
        "(accuracy) | distilled System 1 (accuracy) | distilled agrees with the round's System 2 | base System 1 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        accepted = f"{row.accepted} of {row.inputs}" + (
            f" = {_percent(row.accepted_share)}" if row.accepted_share.value is not None else ""
        )
        lines.append(
            f"| {row.round} | `{row.sampler}` | {accepted} | {_tokens(row.tokens_per_sample)} | "
            f"{_percent(row.system2_accuracy)} | {_percent(row.distilled_accuracy)} | "
            f"{_percent(row.distilled_agreement)} ({row.reference_inputs} of {row.eval_inputs}) | "
            f"{_percent(row.base_system1)} |"
        )
    lines += [
        "",
        "Each round's own report (every system, paired comparisons) is `round-<r>/eval/report.md`.",
    ]
    return "\n".join(lines) + "\n"
