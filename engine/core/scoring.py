"""Scoring held-out answers, pure: each system's accuracy and agreement with System 2, per input and overall, and
the distilled System 1's paired comparisons with the others.

An outcome is per input: (answers that count, answers), right answers for accuracy and answers equal to System 2's
vote for agreement. Intervals take the input as the unit (one input's n samples are correlated: core.stats), and
two systems are compared pair by pair on the same inputs, matched by input id. engine/stages/evaluate.py runs the
systems and writes what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from s2d.engine.core.criteria import sample_answers
from s2d.engine.core.methods import Extractor
from s2d.engine.core.program import Chain
from s2d.engine.core.stats import clustered_interval, paired_comparison
from s2d.engine.core.tasks import TaskInput, get_task
from s2d.engine.core.votes import majority_vote

TEACHER_SYSTEM1 = "teacher_system1"  # the kind of the teacher's System 1 beside a student's

Outcomes = dict[str, tuple[int, int]]  # input id -> (answers that count: right, or agreeing; answers)


@dataclass(frozen=True)
class SystemScore:
    system: str
    kind: str  # system1 | system2 | distilled
    accuracy: float
    correct: float
    total: int  # held-out inputs
    samples: int  # scored answers (inputs x samples for a mean over samples)
    tokens_per_answer: float  # generated tokens per answer, all steps of all samples that made it
    ci_low: float  # 95% interval of the accuracy, the input as the unit (core.stats.clustered_interval)
    ci_high: float
    latency_s: float | None = None  # batched: the system's wall time over the held-out set / inputs
    # Agreement with System 2: the share of its answers (over the inputs where System 2's own samples reach the
    # job's criterion) that equal System 2's majority answer; None for System 2's majority, which is the reference.
    agreement: float | None = None
    agreement_low: float | None = None  # 95% interval of the agreement, the input as the unit
    agreement_high: float | None = None
    agreement_samples: int | None = None  # answers compared: reference inputs x the system's samples per input
    effective_samples: float | None = None  # the accuracy interval's sample size: samples / design effect
    agreement_effective_samples: float | None = None


def input_keys(inputs: Sequence[TaskInput]) -> list[str]:
    """Each held-out input's id, the key that pairs two systems' outcomes (a repeated id is numbered)."""
    seen: dict[str, int] = {}
    keys = []
    for item in inputs:
        seen[item.input_id] = seen.get(item.input_id, 0) + 1
        keys.append(item.input_id if seen[item.input_id] == 1 else f"{item.input_id}#{seen[item.input_id]}")
    return keys


def _score(name: str, kind: str, outcomes: Outcomes, tokens: float) -> SystemScore:
    interval = clustered_interval(outcomes.values())
    total = len(outcomes)
    return SystemScore(
        name,
        kind,
        interval.rate,
        interval.rate * total,
        total,
        interval.answers,
        tokens,
        interval.low,
        interval.high,
        effective_samples=round(interval.effective, 1),
    )


def _answers(task: str, chains: list[Chain], extractor: Extractor | None) -> list[str | None]:
    # The method's extractor (a custom method may define one); direct answers use the default.
    return sample_answers(get_task(task), extractor or Extractor(), [chain.final_text for chain in chains])


def single_outcomes(
    task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]], extractor: Extractor | None = None
) -> Outcomes:
    """Per input: how many of its samples are right, of how many."""
    return {
        key: (sum(answer == item.label for answer in _answers(task, per_input, extractor)), len(per_input))
        for key, item, per_input in zip(input_keys(inputs), inputs, chains)
    }


def majority_outcomes(
    task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]], extractor: Extractor | None = None
) -> Outcomes:
    """Per input: whether the plurality of its samples is right (threshold 0; a tie counts as wrong)."""
    return {
        key: (int(majority_vote(_answers(task, per_input, extractor), threshold=0.0).answer == item.label), 1)
        for key, item, per_input in zip(input_keys(inputs), inputs, chains)
    }


def _tokens_per_answer(chains: list[list[Chain]], answers: int) -> float:
    return sum(chain.num_tokens for per_input in chains for chain in per_input) / answers


def score_outcomes(name: str, kind: str, outcomes: Outcomes, chains: list[list[Chain]]) -> SystemScore:
    """A sampled system's mean accuracy over every answer it gave (`single_outcomes`), with its tokens per answer."""
    return _score(name, kind, outcomes, _tokens_per_answer(chains, sum(m for _, m in outcomes.values())))


def score_single(
    name: str,
    kind: str,
    task: str,
    inputs: Sequence[TaskInput],
    chains: list[list[Chain]],
    extractor: Extractor | None = None,
) -> SystemScore:
    """Mean accuracy over every sample (for n=1, plain accuracy)."""
    return score_outcomes(name, kind, single_outcomes(task, inputs, chains, extractor), chains)


def score_majority(
    name: str, task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]], extractor: Extractor | None = None
) -> SystemScore:
    """Accuracy of the majority answer (threshold 0: plurality, ties count as wrong); tokens of all n samples."""
    outcomes = majority_outcomes(task, inputs, chains, extractor)
    return _score(name, "system2", outcomes, _tokens_per_answer(chains, len(inputs)))


def system2_reference(
    task: str, chains: list[list[Chain]], extractor: Extractor | None, threshold: float
) -> list[str | None]:
    """System 2's answer per input as the job's vote decides it over its n samples; None where the vote would
    reject the input (tie, below threshold, no answer). Distillation trains System 1 toward exactly this."""
    return [majority_vote(_answers(task, per_input, extractor), threshold).answer for per_input in chains]


def agreement_outcomes(
    task: str,
    chains: list[list[Chain]],
    reference: Sequence[str | None],
    extractor: Extractor | None = None,
    keys: Sequence[str] | None = None,
) -> Outcomes:
    """Per input with a reference answer (keyed by `keys`, else by position): how many of this system's answers
    equal it, of how many."""
    keys = keys if keys is not None else [str(index) for index in range(len(chains))]
    outcomes = {}
    for key, per_input, expected in zip(keys, chains, reference):
        if expected is not None:
            answers = _answers(task, per_input, extractor)
            outcomes[key] = (sum(answer == expected for answer in answers), len(answers))
    return outcomes


def with_agreement(score: SystemScore, outcomes: Outcomes) -> SystemScore:
    """`score` with its agreement with System 2 (unchanged where no input has a reference answer)."""
    interval = clustered_interval(outcomes.values())
    if not interval.answers:
        return score
    return replace(
        score,
        agreement=interval.rate,
        agreement_low=interval.low,
        agreement_high=interval.high,
        agreement_samples=interval.answers,
        agreement_effective_samples=round(interval.effective, 1),
    )


def score_agreement(
    score: SystemScore,
    task: str,
    chains: list[list[Chain]],
    reference: Sequence[str | None],
    extractor: Extractor | None = None,
) -> SystemScore:
    """`score` with its agreement with System 2: over the inputs that have a reference answer, the share of this
    system's answers (every sample's, for a sampled system) equal to it."""
    return with_agreement(score, agreement_outcomes(task, chains, reference, extractor))


def paired_comparisons(systems: Sequence[tuple[SystemScore, Outcomes, Outcomes]]) -> list[dict[str, Any]]:
    """The distilled System 1 against each system with one answer per input (System 1, System 2's majority), on
    accuracy, and against System 1 on agreement with System 2 (System 2's majority is agreement's reference):
    `systems` is (score, accuracy outcomes, agreement outcomes) per system, keyed by input id."""
    distilled = [entry for entry in systems if entry[0].kind == "distilled"]
    if not distilled:
        return []
    score, accuracy, agreement = distilled[0]
    found = []
    for other, other_accuracy, other_agreement in systems:
        if other.kind in ("distilled", TEACHER_SYSTEM1):  # beside a student: its own base System 1 is the baseline
            continue
        if all(m == 1 for _, m in other_accuracy.values()):
            found.append(("accuracy", other, accuracy, other_accuracy))
        if other.kind == "system1" and agreement and all(m == 1 for _, m in other_agreement.values()):
            found.append(("agreement", other, agreement, other_agreement))
    comparisons = []
    for measure, other, first, second in found:
        paired = paired_comparison(
            {k: hits > 0 for k, (hits, _) in first.items()}, {k: hits > 0 for k, (hits, _) in second.items()}
        )
        comparisons.append(
            {"measure": measure, "system": score.system, "versus": other.system, "versus_kind": other.kind}
            | asdict(paired)
        )
    return sorted(comparisons, key=lambda comparison: comparison["measure"] != "accuracy")  # accuracy first
