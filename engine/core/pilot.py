"""The pilot's decisions: pure arithmetic over what a bounded run measured, no I/O.

- `threshold_curve`: for each vote threshold k of n, the share of the pilot's inputs a vote at k would keep and,
  where labels exist, the share of the kept answers that are right (what a stricter or looser vote buys).
- `project`: the full job from the pilot's rates (replica-hours, output bytes, accepted examples), each figure
  with its arithmetic written out, so a reader can check it before booking a cluster.
- `decide`: the verdict, distils / does not distil / inconclusive, from the acceptance and the paired test of
  agreement with System 2 (before vs after the pilot's LoRA). The rule is fixed here, before any pilot ran, and
  is not tuned to any pairing's answer (docs/results.md records what it said on each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from s2d.engine.core.stats import PairedComparison, wilson_interval

DISTILS, DOES_NOT_DISTIL, INCONCLUSIVE = "distils", "does not distil", "inconclusive"


@dataclass(frozen=True)
class InputVotes:
    """One pilot input as its vote saw it."""

    top_answer: str | None  # the most voted answer (None: no sample had an answer)
    top_votes: int
    tied: bool  # another answer has as many votes: a vote rejects it at any threshold
    num_samples: int
    label: str | None = None  # the ground truth, where the task has one


@dataclass(frozen=True)
class ThresholdPoint:
    min_votes: int  # keep an input when its top answer has at least this many of n votes (and no tie)
    accepted: int
    share: float  # accepted / inputs
    right: int | None  # accepted inputs whose answer equals the label (None: no labels)
    precision: float | None  # right / accepted: how often a kept answer is right


def min_votes_for(threshold: float, n: int) -> int:
    """The vote count the job's rule (top share strictly above `threshold`) needs of n samples."""
    return math.floor(threshold * n + 1e-9) + 1


def threshold_curve(inputs: Sequence[InputVotes], n: int) -> list[ThresholdPoint]:
    """For k = 1..n: the inputs whose top answer holds a share >= k/n of its samples, untied, and how many of
    those answers are right (precision only where every input carries a label)."""
    labelled = bool(inputs) and all(item.label is not None for item in inputs)
    points = []
    for k in range(1, n + 1):
        kept = [
            item
            for item in inputs
            if item.top_answer is not None and not item.tied and item.top_votes * n >= k * item.num_samples
        ]
        right = sum(item.top_answer == item.label for item in kept) if labelled else None
        points.append(
            ThresholdPoint(
                min_votes=k,
                accepted=len(kept),
                share=len(kept) / len(inputs) if inputs else 0.0,
                right=right,
                precision=(right / len(kept)) if right is not None and kept else None,
            )
        )
    return points


@dataclass(frozen=True)
class Projection:
    """The full job at the pilot's measured rates; `arithmetic` shows how each figure was reached."""

    full_inputs: int
    replica_hours: float
    output_bytes: float
    accepted: float
    accepted_low: float  # 95% Wilson interval of the acceptance rate, times the full input count
    accepted_high: float
    arithmetic: list[str]


def project(
    *,
    pilot_inputs: int,
    pilot_accepted: int,
    full_inputs: int,
    seconds_per_input: float,
    replicas: int,
    output_bytes: int,
    start_seconds: float = 0.0,
) -> Projection:
    """The full job from the pilot. `seconds_per_input`: wall seconds per input on `replicas` replicas, engine
    start excluded (a replica-second is one replica busy for a second); `start_seconds`: one replica's start-up,
    paid once per replica; `output_bytes`: what the pilot's inputs wrote (every table), scaled per input."""
    if pilot_inputs <= 0:
        raise ValueError("a projection needs a pilot with inputs")
    replica_seconds = seconds_per_input * replicas
    hours = (full_inputs * replica_seconds + replicas * start_seconds) / 3600
    per_input_bytes = output_bytes / pilot_inputs
    rate = pilot_accepted / pilot_inputs
    low, high = wilson_interval(pilot_accepted, pilot_inputs)
    arithmetic = [
        f"replica-hours = ({full_inputs:,} inputs x {seconds_per_input:.3f} s/input x {replicas} replica(s) + "
        f"{replicas} x {start_seconds:.0f} s start-up) / 3600 = {hours:,.2f}",
        f"output bytes = {output_bytes:,} B / {pilot_inputs:,} pilot inputs x {full_inputs:,} inputs = "
        f"{per_input_bytes * full_inputs:,.0f} B ({_size(per_input_bytes * full_inputs)})",
        f"accepted = {pilot_accepted} / {pilot_inputs} ({rate:.1%}, 95% CI [{low:.1%}, {high:.1%}]) x "
        f"{full_inputs:,} inputs = {rate * full_inputs:,.0f} [{low * full_inputs:,.0f}, {high * full_inputs:,.0f}]",
    ]
    return Projection(
        full_inputs,
        hours,
        per_input_bytes * full_inputs,
        rate * full_inputs,
        low * full_inputs,
        high * full_inputs,
        arithmetic,
    )


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num_bytes < 1000 or unit == "TB":
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} TB"  # unreachable: the loop returns at TB


@dataclass(frozen=True)
class VerdictRule:
    """The verdict's rule, fixed before any pilot ran (never tuned to a pairing's outcome)."""

    alpha: float = 0.05  # McNemar's exact two-sided p below which the agreement gain counts as real
    min_gain: float = 0.05  # a gain in agreement whose 95% upper bound is below this is too small to matter


@dataclass(frozen=True)
class Verdict:
    label: str  # distils | does not distil | inconclusive
    because: str  # the numbers behind it, one line


def decide(accepted: int, agreement: PairedComparison | None, rule: VerdictRule = VerdictRule()) -> Verdict:
    """The pilot's verdict, in order:
    1. no input passed the vote: does not distil (the full job would stop before training);
    2. no held-out input where System 2's own vote passes: inconclusive (agreement cannot be measured);
    3. agreement with System 2 after the LoRA is higher than before, McNemar p < alpha: distils;
    4. the 95% upper bound of the agreement gain is below min_gain (no gain, or a loss): does not distil;
    5. otherwise inconclusive (too few held-out inputs to tell; a bigger pilot may)."""
    if accepted == 0:
        return Verdict(DOES_NOT_DISTIL, "0 inputs passed the vote: nothing to train on")
    if agreement is None or agreement.inputs == 0:
        return Verdict(INCONCLUSIVE, "no held-out input where System 2's vote passes: agreement cannot be measured")
    numbers = (
        f"agreement with System 2 {_before(agreement):.1%} -> {_after(agreement):.1%} on {agreement.inputs} "
        f"held-out inputs, {agreement.difference * 100:+.1f} pts [{agreement.low * 100:+.1f}, "
        f"{agreement.high * 100:+.1f}], McNemar p = {agreement.p_value:.2g} ({agreement.first_only} only after / "
        f"{agreement.second_only} only before); {accepted} accepted"
    )
    if agreement.difference > 0 and agreement.p_value < rule.alpha:
        return Verdict(DISTILS, f"{numbers}; gain significant (p < {rule.alpha:g})")
    if agreement.high < rule.min_gain:
        return Verdict(DOES_NOT_DISTIL, f"{numbers}; gain below {rule.min_gain * 100:+.0f} pts at 95%")
    return Verdict(INCONCLUSIVE, f"{numbers}; neither significant nor excluded (a larger pilot may tell)")


def _after(comparison: PairedComparison) -> float:
    return (comparison.both + comparison.first_only) / comparison.inputs


def _before(comparison: PairedComparison) -> float:
    return (comparison.both + comparison.second_only) / comparison.inputs
