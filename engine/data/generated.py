"""The replica -> curation contract, replica side: what a replica runs per batch of input rows for the job's
consistency criterion, and the columns it returns (s2d.engine.data.curation decides on them).

Row contract (columns a generated row carries, beyond input_id, shard_id, prompt):
  all rules      sample_texts [n] (the input's own samples), sample_tokens [n]
  perturbation   variant_texts [k][n], variant_tokens [k][n], variant_inverse [k] (JSON: variant answer ->
                 original answer); variant 0 is the input itself, so variant_texts[0] == sample_texts
  usc            usc_choice (0-based index into sample_texts, -1 when the judge named none), usc_tokens
  keep_samples   sample_steps [n] (or [k*n], variant by variant): each sample's chain as JSON
                 (s2d.engine.data.samples); when present, the curated rows carry the samples for the samples table
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from s2d.engine.core.answers import parse_usc_choice
from s2d.engine.core.criteria import RULES, USC_MAX_TOKENS, _context, _input_of, usc_prompt
from s2d.engine.core.methods import Method
from s2d.engine.core.perturb import get_perturbation, make_variants
from s2d.engine.core.program import Generator, SamplingRequest, run_method
from s2d.engine.core.tasks import Task
from s2d.engine.data.samples import chain_json


def generate_for_curation(
    generator: Generator,
    method: Method,
    task: Task,
    rows: Sequence[dict[str, Any]],
    request: SamplingRequest,
    *,
    rule: str = "majority",
    perturbation: str | None = None,
    variants: int = 2,
    seed: int = 0,
    keep_samples: bool = False,
) -> dict[str, list]:
    """Columns of the generated rows for a batch of input rows (module docstring: the row contract).

    Input rows carry input_id, shard_id, question, prompt (the System 1 prompt) and, for tasks with
    structured inputs, fields (a dict or its JSON). All calls of a batch are batched across its inputs.
    """
    if rule not in RULES:
        raise ValueError(f"unknown consistency rule {rule!r}; choose one of {list(RULES)}")
    items = [_input_of(row) for row in rows]
    columns: dict[str, list] = {
        "input_id": [item.input_id for item in items],
        "shard_id": [int(row["shard_id"]) for row in rows],
        "prompt": [str(row["prompt"]) for row in rows],
    }
    if rule == "perturbation":
        perturber = get_perturbation(perturbation or "")
        per_input = [make_variants(item, task, perturber, variants, seed) for item in items]
        contexts = [
            _context(task, variant.question, variant.fields, row["prompt"] if index == 0 else None)
            for row, input_variants in zip(rows, per_input)
            for index, variant in enumerate(input_variants)
        ]
        chains = run_method(generator, method, contexts, request)
        grouped = [chains[start : start + variants] for start in range(0, len(chains), variants)]
        columns["variant_texts"] = [[[c.final_text for c in per_variant] for per_variant in g] for g in grouped]
        columns["variant_tokens"] = [[[c.num_tokens for c in per_variant] for per_variant in g] for g in grouped]
        columns["variant_inverse"] = [[json.dumps(v.inverse, sort_keys=True) for v in vs] for vs in per_input]
        columns["sample_texts"] = [texts[0] for texts in columns["variant_texts"]]
        columns["sample_tokens"] = [tokens[0] for tokens in columns["variant_tokens"]]
        if keep_samples:
            columns["sample_steps"] = [[chain_json(c.steps) for per_variant in g for c in per_variant] for g in grouped]
        return columns
    contexts = [_context(task, item.question, item.fields, row["prompt"]) for row, item in zip(rows, items)]
    chains = run_method(generator, method, contexts, request)
    columns["sample_texts"] = [[chain.final_text for chain in per_input] for per_input in chains]
    columns["sample_tokens"] = [[chain.num_tokens for chain in per_input] for per_input in chains]
    if keep_samples:
        columns["sample_steps"] = [[chain_json(chain.steps) for chain in per_input] for per_input in chains]
    if rule == "usc":
        prompts = [usc_prompt(item.question, texts) for item, texts in zip(items, columns["sample_texts"])]
        judge = SamplingRequest(n=1, temperature=0.0, max_tokens=USC_MAX_TOKENS)
        outputs = generator.generate(prompts, judge) if prompts else []
        choices = [parse_usc_choice(completion.text, request.n) for (completion,) in outputs]
        columns["usc_choice"] = [-1 if choice is None else choice for choice in choices]
        columns["usc_tokens"] = [completion.num_tokens for (completion,) in outputs]
    return columns
