"""The majority criterion: the top answer of an input's n samples needs more than `threshold` of the votes.

Decided for a whole batch with array operations (s2d.engine.core.votes.majority_votes), no Python per input.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.criteria.base import (
    DECISION_SCHEMA,
    Ballots,
    CriterionOptions,
    GeneratedInput,
    sample_inputs,
)
from s2d.engine.core.methods import Method
from s2d.engine.core.program import Generator, SamplingRequest
from s2d.engine.core.tasks import Task, TaskInput
from s2d.engine.core.votes import Vote, majority_votes


class Majority:
    name = "majority"
    description = "vote over the n samples: the top answer needs more than `threshold` of them"
    perturbs = False

    def check(self, task: Task, perturbation: str | None) -> None:
        pass

    def generate(
        self,
        generator: Generator,
        method: Method,
        task: Task,
        items: Sequence[TaskInput],
        prompts: Sequence[str],
        request: SamplingRequest,
        options: CriterionOptions,
    ) -> list[GeneratedInput]:
        return [GeneratedInput([chains]) for chains in sample_inputs(generator, method, task, items, prompts, request)]

    def decide(self, ballots: Ballots, options: CriterionOptions) -> pa.Table:
        votes = majority_votes(ballots.answers, options.threshold)
        accepted = pc.is_null(votes.column("reason"))
        detail = pc.if_else(accepted, "", majority_detail(votes, options.threshold))
        return pa.table(
            {name: detail if name == "detail" else votes.column(name) for name in DECISION_SCHEMA.names}
        ).cast(DECISION_SCHEMA)


def vote_detail(vote: Vote, threshold: float) -> str:
    """Why a vote failed, for people: the top answer's votes against the threshold."""
    top = next(iter(vote.counts.items()), None)
    if top is None:
        return f"no parseable answer in {vote.num_samples} samples"
    return f"top answer '{top[0]}' has {top[1]}/{vote.num_samples} votes, need > {threshold:g}"


def majority_detail(votes: pa.Table, threshold: float) -> pa.Array:
    """`vote_detail` for every row of `majority_votes`."""
    samples = pc.cast(votes.column("num_samples"), pa.string())
    top = pc.binary_join_element_wise(
        "top answer '",
        votes.column("top_answer"),
        "' has ",
        pc.cast(votes.column("votes"), pa.string()),
        "/",
        samples,
        f" votes, need > {threshold:g}",
        "",
    )
    none = pc.binary_join_element_wise("no parseable answer in ", samples, " samples", "")
    return pc.if_else(pc.is_null(votes.column("top_answer")), none, top)
