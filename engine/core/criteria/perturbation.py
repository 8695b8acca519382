"""The perturbation criterion: each input also runs as k-1 rewrites (s2d.engine.core.perturb) that must not change
its answer; the input is kept only when every variant's answer, mapped back to the input's, is the same."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from s2d.engine.core.criteria.base import (
    Ballots,
    CriterionOptions,
    Decision,
    GeneratedInput,
    decisions_table,
    method_context,
)
from s2d.engine.core.criteria.majority import vote_detail
from s2d.engine.core.methods import Method
from s2d.engine.core.perturb import get_perturbation, make_variants
from s2d.engine.core.program import Generator, SamplingRequest, run_method
from s2d.engine.core.tasks import Task, TaskInput
from s2d.engine.core.votes import majority_vote, ranked_counts


class Perturbation:
    name = "perturbation"
    description = "also sample k-1 rewrites of the input; keep it only if all variants agree (mapped back)"
    perturbs = True

    def check(self, task: Task, perturbation: str | None) -> None:
        if not perturbation:
            raise ValueError("curate.rule perturbation needs curate.perturbation (a perturbation name)")
        get_perturbation(perturbation).check_task(task)

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
        perturber, count = get_perturbation(options.perturbation or ""), options.variants
        per_input = [make_variants(item, task, perturber, count, options.seed) for item in items]
        # Every variant of every input in one batch; variant 0 keeps the input's own System 1 prompt.
        contexts = [
            method_context(task, variant.question, variant.fields, prompt if index == 0 else None)
            for prompt, variants in zip(prompts, per_input)
            for index, variant in enumerate(variants)
        ]
        chains = run_method(generator, method, contexts, request)
        return [
            GeneratedInput(chains[start * count : (start + 1) * count], [variant.inverse for variant in variants])
            for start, variants in enumerate(per_input)
        ]

    def decide(self, ballots: Ballots, options: CriterionOptions) -> pa.Table:
        decisions = []
        for answers, variants in zip(ballots.answers.to_pylist(), ballots.variants.to_pylist()):
            per_variant: dict[int, list[str | None]] = {}
            for answer, variant in zip(answers or (), variants or ()):
                per_variant.setdefault(variant, []).append(answer)
            decisions.append(
                perturbation_decision(list(per_variant.values()), options.threshold, options.per_variant_majority)
            )
        return decisions_table(decisions)


def perturbation_decision(
    variant_answers: Sequence[Sequence[str | None]], threshold: float, per_variant_majority: bool
) -> Decision:
    """Accept when every variant's answer (already mapped back to the input's answer space) is the same.

    A variant's answer is its plurality answer (ties rejected) or, with `per_variant_majority`, its
    majority answer above `threshold`. The pooled counts over all variants are the answer distribution.
    """
    counts = ranked_counts(answer for answers in variant_answers for answer in answers)
    num_samples = sum(map(len, variant_answers))
    variant_threshold = threshold if per_variant_majority else 0.0
    votes = [majority_vote(answers, variant_threshold) for answers in variant_answers]
    top_votes = next(iter(counts.values()), 0)
    for index, vote in enumerate(votes):
        if not vote.accepted:
            detail = f"variant {index} of {len(votes)}: {vote_detail(vote, variant_threshold)}"
            return Decision("perturbation", None, top_votes, num_samples, counts, f"variant_{vote.reason}", detail)
    answers = [vote.answer for vote in votes]
    if len(set(answers)) > 1:
        detail = "variant answers (mapped back): " + ", ".join(repr(answer) for answer in answers)
        return Decision("perturbation", None, top_votes, num_samples, counts, "variants_disagree", detail)
    return Decision("perturbation", answers[0], counts[answers[0]], num_samples, counts, None)
