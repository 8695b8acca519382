"""The replica -> curation contract: one Arrow schema (`GENERATED_SCHEMA`) that the replica returns for a batch of
input rows and curation (s2d.engine.data.curation) reads, column by column.

One row per input:
  input_id, shard_id, prompt   the input (prompt: its System 1 prompt)
  input_error                  why the replica could not run it ("too_long: ..."); then it has no samples
  samples                      every sample in generation order (variant by variant): its variant (null unless
                               the criterion numbers variants), index within the variant, final text, tokens and,
                               with output.keep_samples, each step of its chain (samples.STEP_TYPE; null otherwise)
  variant_inverse              per variant, its answer -> the input's answer (perturbation; null otherwise)
  judge_choice, judge_tokens   the sample a judge call chose (null: none) and the call's tokens (usc)

The replica runs the job's criterion's generate part (s2d.engine.core.criteria) and packs its plain Python result
here (`pack_generated`): no JSON per chain, so curation passes each chain's steps on to the samples table by
array operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.criteria import CriterionOptions, GeneratedInput, get_criterion, input_of
from s2d.engine.core.methods import Method
from s2d.engine.core.program import Chain, Generator, SamplingRequest
from s2d.engine.core.tasks import Task
from s2d.engine.data.samples import STEP_TYPE

STEPS_TYPE = pa.list_(STEP_TYPE)
GENERATED_SAMPLE_TYPE = pa.struct(
    [
        ("variant", pa.int32()),
        ("sample", pa.int32()),
        ("text", pa.string()),  # the chain's final text: what the answer is extracted from
        ("tokens", pa.int64()),  # generated tokens of all of the sample's LLM calls
        ("steps", STEPS_TYPE),
    ]
)
INVERSE_TYPE = pa.map_(pa.string(), pa.string())
GENERATED_SCHEMA = pa.schema(
    [
        ("input_id", pa.string()),
        ("shard_id", pa.int32()),
        ("prompt", pa.string()),
        ("input_error", pa.string()),
        ("samples", pa.list_(GENERATED_SAMPLE_TYPE)),
        ("variant_inverse", pa.list_(INVERSE_TYPE)),
        ("judge_choice", pa.int32()),
        ("judge_tokens", pa.int64()),
    ]
)


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
) -> pa.Table:
    """The GENERATED_SCHEMA rows of a batch of input rows, under the job's consistency rule.

    Input rows carry input_id, shard_id, question, prompt (the System 1 prompt) and, for tasks with
    structured inputs, fields (a dict or its JSON). All calls of a batch are batched across its inputs.
    """
    criterion = get_criterion(rule)
    options = CriterionOptions(perturbation=perturbation, variants=variants, seed=seed)
    prompts = [str(row["prompt"]) for row in rows]
    generated = criterion.generate(generator, method, task, [input_of(row) for row in rows], prompts, request, options)
    return pack_generated(rows, generated, keep_samples)


def pack_generated(rows: Sequence[dict[str, Any]], generated: Sequence[GeneratedInput], keep_samples: bool) -> pa.Table:
    """A criterion's generate output for `rows` as GENERATED_SCHEMA: flat Python lists per field, then one Arrow
    array each (the per-sample Python here only reads the chains; numbering is array arithmetic)."""
    chains = [chain for result in generated for per_variant in result.variants for chain in per_variant]
    # One group per (input, variant): its size, its variant number (null unless the criterion numbers variants)
    sizes = np.array([len(chains) for result in generated for chains in result.variants], np.int64)
    numbers = [variant for result in generated for variant in range(len(result.variants))]
    unnumbered = np.array([result.inverses is None for result in generated for _ in result.variants], bool)
    starts = np.cumsum(sizes) - sizes
    indices = np.arange(len(chains), dtype=np.int32) - np.repeat(starts, sizes).astype(np.int32)
    variants = np.repeat(np.array(numbers, np.int32), sizes)
    input_sizes = [sum(len(chains) for chains in result.variants) for result in generated]
    input_offsets = np.r_[0, np.cumsum(input_sizes, dtype=np.int64)].astype(np.int32)
    texts = pa.array([chain.final_text for chain in chains], pa.string())
    samples = pa.StructArray.from_arrays(
        [
            pa.array(variants, pa.int32(), mask=np.repeat(unnumbered, sizes)),
            pa.array(indices, pa.int32()),
            texts,
            pa.array([chain.num_tokens for chain in chains], pa.int64()),
            _steps(chains, texts) if keep_samples else pa.nulls(len(chains), STEPS_TYPE),
        ],
        fields=list(GENERATED_SAMPLE_TYPE),
    )
    inverses = [
        None if result.inverses is None else [list(inverse.items()) for inverse in result.inverses]
        for result in generated
    ]
    return pa.table(
        {
            "input_id": pa.array([str(row["input_id"]) for row in rows], pa.string()),
            "shard_id": pa.array([int(row["shard_id"]) for row in rows], pa.int32()),
            "prompt": pa.array([str(row["prompt"]) for row in rows], pa.string()),
            "input_error": pa.nulls(len(rows), pa.string()),
            "samples": pa.ListArray.from_arrays(pa.array(input_offsets), samples),
            "variant_inverse": pa.array(inverses, GENERATED_SCHEMA.field("variant_inverse").type),
            "judge_choice": pa.array([result.judge_choice for result in generated], pa.int32()),
            "judge_tokens": pa.array([result.judge_tokens for result in generated], pa.int64()),
        },
        schema=GENERATED_SCHEMA,
    )


def _steps(chains: Sequence[Chain], final_texts: pa.Array) -> pa.ListArray:
    """Each chain's steps in order (STEPS_TYPE): one entry per step, one per call of a fan-out step.
    `final_texts`: each chain's final text, which is its one step's text when every chain has one step."""
    chain_steps = [chain.steps for chain in chains]
    lengths = [len(steps) for steps in chain_steps]
    names = [name for steps in chain_steps for name in steps]
    texts = [text for steps in chain_steps for text in steps.values()]
    items = pa.nulls(len(names), pa.int32())
    fan_out = any(isinstance(text, list) for text in texts)
    if fan_out:  # a fan-out step: one entry per call, numbered
        names, items, texts, lengths = [], [], [], []
        for steps in chain_steps:
            start = len(names)
            for name, text in steps.items():
                calls = text if isinstance(text, list) else [text]
                names.extend([name] * len(calls))
                items.extend(range(len(calls)) if isinstance(text, list) else [None])
                texts.extend(calls)
            lengths.append(len(names) - start)
        items = pa.array(items, pa.int32())
    one_step_each = not fan_out and lengths.count(1) == len(lengths)  # each text is its chain's final text
    offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)].astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [pa.array(names, pa.string()), items, final_texts if one_step_each else pa.array(texts, pa.string())],
            fields=list(STEP_TYPE),
        ),
    )


def with_input_errors(generated: pa.Table, rows: Sequence[dict[str, Any]], errors: Sequence[str | None]) -> pa.Table:
    """All of `rows`, in order: those whose error is None from `generated` (their rows, in order), the others with
    their input_error and no samples, so that curation quarantines them."""
    if all(error is None for error in errors):
        return generated
    unrun = pa.Table.from_pylist(
        [
            {
                "input_id": str(row["input_id"]),
                "shard_id": int(row["shard_id"]),
                "prompt": str(row["prompt"]),
                "input_error": error,
            }
            for row, error in zip(rows, errors)
            if error is not None
        ],
        schema=GENERATED_SCHEMA,
    )
    ran, failed = iter(range(generated.num_rows)), iter(range(generated.num_rows, len(rows)))
    order = [next(ran) if error is None else next(failed) for error in errors]
    return pa.concat_tables([generated, unrun]).take(pa.array(order, pa.int64()))


def generated_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """GENERATED_SCHEMA rows given one by one (tests, benchmarks); columns a row lacks are null."""
    return pa.Table.from_pylist(list(rows), schema=GENERATED_SCHEMA)


def sample_count(generated: pa.Table) -> int:
    """The samples of a batch of generated rows (variants included)."""
    return pc.sum(pc.list_value_length(generated.column("samples"))).as_py() or 0
