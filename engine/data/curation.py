"""Curation: a batch of generated rows (the replica's contract, s2d.engine.data.generated.GENERATED_SCHEMA) -> the
curated table (s2d.engine.data.shards.CURATED_SCHEMA), one row per input, accepted or rejected, with the criterion
that decided and its reason.

Column by column: the only Python per sample is the answer extraction itself (and, for a criterion with variants,
mapping each answer back to the input's). The job's criterion (s2d.engine.core.criteria) decides every input of
the batch from those answers; the samples' steps, when kept, pass from the generated rows to the curated rows'
`samples` column by offsets, without being read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.criteria import Ballots, CriterionOptions, extracted_and_answers_array, get_criterion
from s2d.engine.core.methods import Extractor
from s2d.engine.core.tasks import get_task
from s2d.engine.data.samples import SAMPLE_FIELDS, SAMPLES, SAMPLES_COLUMN
from s2d.engine.data.shards import CURATED_SCHEMA


def curate_generated(
    generated: pa.Table,
    *,
    task: str,
    method: str,
    model: str,
    rule: str = "majority",
    threshold: float = 0.5,
    per_variant_majority: bool = False,
    extractor: dict[str, Any] | None = None,
) -> pa.Table:
    """Generated rows (GENERATED_SCHEMA) -> the curated table, one row per input."""
    criterion = get_criterion(rule)
    options = CriterionOptions(threshold=threshold, per_variant_majority=per_variant_majority)
    samples = _combined(generated.column("samples"))
    flat = pc.list_flatten(samples)  # every sample of the batch, input by input
    extracted, answers = extracted_and_answers_array(get_task(task), Extractor(**(extractor or {})), flat.field("text"))
    answers = _mapped_back(generated, samples, flat, answers)
    ballots = Ballots(
        _same_lists(samples, answers), _same_lists(samples, flat.field("variant")), _combined(generated["judge_choice"])
    )
    curated = curated_from_decisions(
        generated, criterion.decide(ballots, options), criterion.name, method=method, model=model
    )
    steps = flat.field("steps")
    if len(steps) == 0 or steps.null_count == len(steps):  # the samples were not kept (output.keep_samples)
        return curated
    column = _samples_column(samples, flat, extracted, answers)
    return curated.set_column(curated.schema.get_field_index(SAMPLES), SAMPLES, column)


def curate_majority(
    generated: pa.Table, answers: pa.ListArray, *, method: str, model: str, threshold: float
) -> pa.Table:
    """The majority rule over a batch, column by column: `answers` holds each input's normalised sample answers
    (None when unparseable); `generated` gives input_id, shard_id, prompt and the samples' tokens."""
    majority = get_criterion("majority")
    empty = pa.nulls(len(answers), pa.list_(pa.int32()))
    ballots = Ballots(answers, empty, pa.nulls(len(answers), pa.int32()))
    decisions = majority.decide(ballots, CriterionOptions(threshold=threshold))
    return curated_from_decisions(generated, decisions, majority.name, method=method, model=model)


def curated_from_decisions(
    generated: pa.Table, decisions: pa.Table, criterion: str, *, method: str, model: str
) -> pa.Table:
    """CURATED_SCHEMA rows from the generated rows and the criterion's decisions (one per row, in order).

    system2_tokens: what each sample cost, its own calls plus its share of the input's judge call, averaged."""
    size = generated.num_rows
    samples = _combined(generated.column("samples"))
    per_input = pc.fill_null(pc.list_value_length(samples), 0).to_numpy()
    tokens = pc.list_flatten(samples).field("tokens").to_numpy(zero_copy_only=False).astype(np.float64)
    if "judge_tokens" in generated.column_names:
        judge = pc.fill_null(_combined(generated.column("judge_tokens")), 0).to_numpy(zero_copy_only=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            tokens = tokens + np.repeat(judge / per_input, per_input)
    owners = np.repeat(np.arange(size), per_input)
    token_sums = np.bincount(owners, minlength=size, weights=tokens)
    num_samples, votes = decisions.column("num_samples").to_numpy(), decisions.column("votes").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_tokens = np.where(per_input > 0, token_sums / per_input, 0.0)
        agreement = np.where(num_samples > 0, votes / num_samples, 0.0)
    accepted = pc.is_null(decisions.column("reason"))
    columns = {
        "status": pc.if_else(accepted, "accepted", "rejected"),
        "input_id": generated.column("input_id"),
        "shard_id": generated.column("shard_id"),
        "prompt": generated.column("prompt"),
        "agreement": pa.array(agreement),
        "method": pa.repeat(method, size),
        "model": pa.repeat(model, size),
        "system2_tokens": pa.array(mean_tokens),
        "criterion": pa.repeat(criterion, size),
        **{name: decisions.column(name) for name in decisions.column_names},
    }
    return pa.table(
        {
            name: columns.get(name, pa.nulls(size, field.type))
            for name, field in zip(CURATED_SCHEMA.names, CURATED_SCHEMA)
        }
    ).cast(CURATED_SCHEMA)


def _mapped_back(generated: pa.Table, samples: pa.ListArray, flat: pa.StructArray, answers: pa.Array) -> pa.Array:
    """Each sample's answer in its input's answer space: a variant's answer through that variant's inverse."""
    if "variant_inverse" not in generated.column_names:
        return answers
    inverses = _combined(generated.column("variant_inverse"))
    if inverses.null_count == len(inverses):
        return answers
    answers = answers.to_pylist()
    per_input = [None if maps is None else [dict(inverse) for inverse in maps] for maps in inverses.to_pylist()]
    owners = pc.list_parent_indices(samples).to_numpy()
    variants = flat.field("variant").to_pylist()
    mapped = []
    for answer, owner, variant in zip(answers, owners, variants):
        maps = per_input[owner]
        mapped.append(
            answer if answer is None or maps is None or variant is None else maps[variant].get(answer, answer)
        )
    return pa.array(mapped, pa.string())


def _samples_column(samples: pa.ListArray, flat: pa.StructArray, extracted: pa.Array, answers: pa.Array) -> pa.Array:
    """The curated rows' `samples` column (samples.SAMPLE_FIELDS): the generated samples' variant, index, steps and
    tokens as they are, with each one's extracted and normalised answer; null for an input without samples."""
    fields = {
        "variant": flat.field("variant"),
        "sample": flat.field("sample"),
        "steps": flat.field("steps"),
        "extracted": extracted,
        "answer": answers,
        "tokens": flat.field("tokens"),
    }
    struct = pa.StructArray.from_arrays(
        [fields[name] for name, _ in SAMPLE_FIELDS], fields=[pa.field(name, kind) for name, kind in SAMPLE_FIELDS]
    )
    lengths = pc.fill_null(pc.list_value_length(samples), 0).to_numpy()
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    return pa.ListArray.from_arrays(offsets, struct, mask=pc.is_null(samples)).cast(SAMPLES_COLUMN[1])


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.Array):
        return column
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _same_lists(lists: pa.ListArray, values: pa.Array) -> pa.ListArray:
    """`values` (one per element of `lists`, in order) cut into lists of the same lengths."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    return pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32)), values)


def curate_kwargs(spec: Any) -> dict[str, Any]:
    """The keyword arguments of `curate_generated` for a JobSpec (plain data, so Ray can ship them)."""
    return dict(
        task=spec.task.name,
        method=spec.method.name,
        model=spec.model,
        rule=spec.curate.rule,
        threshold=spec.curate.threshold,
        per_variant_majority=spec.curate.per_variant_majority,
        extractor=spec.method.extractor.model_dump(),
    )
