"""Consistency criteria: the rules that keep or drop an input (`curate.rule`), one module each; this package is
the registry. See s2d.engine.core.criteria.base for what a criterion is (its generate and decide parts).

- majority: the top answer of the n samples needs more than `threshold` of the votes;
- perturbation: each input also runs as k-1 rewrites whose answers, mapped back, must all agree;
- usc (universal self-consistency): one greedy judge call picks the most consistent of the n responses.

Register a new one with `register(MyCriterion())`: the job spec accepts its name, the replica runs its generate
part (s2d.engine.data.generated) and curation its decide part (s2d.engine.data.curation).
"""

from __future__ import annotations

from typing import Any

from s2d.engine.core.criteria.base import (
    DECISION_SCHEMA,
    Ballots,
    Criterion,
    CriterionOptions,
    Decision,
    GeneratedInput,
    extracted_and_answers,
    extracted_and_answers_array,
    input_context,
    input_of,
    method_context,
    sample_answers,
)
from s2d.engine.core.criteria.majority import Majority
from s2d.engine.core.criteria.perturbation import Perturbation, perturbation_decision
from s2d.engine.core.criteria.usc import USC_MAX_TOKENS, UniversalSelfConsistency, usc_decision, usc_prompt
from s2d.engine.core.methods import resolve_method
from s2d.engine.core.tasks import get_task, input_fields_of, task_variables

CRITERIA: dict[str, Criterion] = {}


def register(criterion: Criterion) -> None:
    if criterion.name in CRITERIA:
        raise ValueError(f"consistency rule {criterion.name!r} is already registered")
    CRITERIA[criterion.name] = criterion


for _builtin in (Majority(), Perturbation(), UniversalSelfConsistency()):
    register(_builtin)


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown consistency rule {name!r}; choose one of {list(CRITERIA)}") from None


def check_compatibility(task_name: str, method: str | dict[str, Any], rule: str, perturbation: str | None) -> None:
    """Raise ValueError when the method reads fields the task lacks, or the criterion cannot run on the task."""
    task, resolved = get_task(task_name), resolve_method(method)
    offered = set(input_fields_of(task)) | set(task_variables(task))
    missing = resolved.required_fields - offered
    if missing:
        raise ValueError(
            f"method {resolved.name!r} reads input fields {sorted(missing)}, which task "
            f"{task.name!r} does not have (its fields: {sorted(offered) or 'none'})"
        )
    criterion = get_criterion(rule)
    if perturbation and not criterion.perturbs:
        users = " or ".join(name for name, other in CRITERIA.items() if other.perturbs)
        raise ValueError(f"curate.perturbation is only used by rule {users}, not {rule!r}")
    criterion.check(task, perturbation)


__all__ = [
    "CRITERIA",
    "DECISION_SCHEMA",
    "USC_MAX_TOKENS",
    "Ballots",
    "Criterion",
    "CriterionOptions",
    "Decision",
    "GeneratedInput",
    "Majority",
    "Perturbation",
    "UniversalSelfConsistency",
    "check_compatibility",
    "extracted_and_answers",
    "extracted_and_answers_array",
    "get_criterion",
    "input_context",
    "input_of",
    "method_context",
    "perturbation_decision",
    "register",
    "sample_answers",
    "usc_decision",
    "usc_prompt",
]
