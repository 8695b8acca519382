"""Curation: a batch of generated rows (the replica's contract, s2d.engine.data.generated) -> the curated table
(s2d.engine.data.shards.CURATED_SCHEMA), one row per input, accepted or rejected, with the criterion that decided
and its reason. The majority rule decides the whole batch with array operations (`curate_majority`); only the
per-sample answer extraction is Python. Perturbation and USC decide row by row (s2d.engine.core.criteria), into the
same table.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.criteria import RULES, Decision, extracted_and_answers, perturbation_decision, usc_decision
from s2d.engine.core.methods import Extractor
from s2d.engine.core.perturb import invert_answer
from s2d.engine.core.tasks import get_task
from s2d.engine.core.votes import majority_votes
from s2d.engine.data.samples import SAMPLES, samples_column
from s2d.engine.data.shards import CURATED_SCHEMA, curated_table


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
    """Generated rows (see the module's row contract) -> the curated table, one row per input."""
    task_obj, extract = get_task(task), Extractor(**(extractor or {}))
    if rule == "majority":
        texts = _combined(generated.column("sample_texts"))
        extracted, answers = extracted_and_answers(task_obj, extract, texts.flatten().to_pylist())
        curated = curate_majority(
            generated,
            _same_lists(texts, pa.array(answers, pa.string())),
            method=method,
            model=model,
            threshold=threshold,
        )
        return _with_samples(curated, generated, extracted, answers)
    if rule not in RULES:
        raise ValueError(f"unknown consistency rule {rule!r}; choose one of {list(RULES)}")
    rows, per_variant = [], None
    flat: dict[str, list] = {"extracted": [], "answers": [], "tokens": []}  # every sample, for the samples table
    for row in generated.to_pylist():
        if rule == "perturbation":
            variant_answers = []
            for texts, inverse in zip(row["variant_texts"], row["variant_inverse"]):
                extracted, answers = extracted_and_answers(task_obj, extract, texts)
                variant_answers.append([invert_answer(json.loads(inverse), answer) for answer in answers])
                flat["extracted"] += extracted
                flat["answers"] += variant_answers[-1]
            decision = perturbation_decision(variant_answers, threshold, per_variant_majority)
            tokens = [count for per_variant in row["variant_tokens"] for count in per_variant]
            flat["tokens"] += tokens
            per_variant = len(row["sample_texts"])
        else:
            choice = int(row["usc_choice"])
            extracted, answers = extracted_and_answers(task_obj, extract, row["sample_texts"])
            decision = usc_decision(answers, None if choice < 0 else choice)
            flat["extracted"] += extracted
            flat["answers"] += answers
            flat["tokens"] += row["sample_tokens"]
            # The judge call is part of what each kept answer cost: spread it over the n samples.
            tokens = [count + row["usc_tokens"] / len(row["sample_tokens"]) for count in row["sample_tokens"]]
        rows.append(_curated_row(row, decision, tokens, method, model))
    return _with_samples(
        curated_table(rows), generated, flat["extracted"], flat["answers"], flat["tokens"], per_variant
    )


def _with_samples(
    curated: pa.Table,
    generated: pa.Table,
    extracted: list,
    answers: list,
    tokens: list | None = None,
    per_variant: int | None = None,
) -> pa.Table:
    """The curated rows with their samples, when the replica sent them (output.keep_samples). `tokens` per sample;
    None: the generated rows' own sample_tokens, read only when the samples are kept."""
    if "sample_steps" not in generated.column_names:
        return curated
    if tokens is None:
        tokens = _combined(generated.column("sample_tokens")).flatten().to_pylist()
    column = samples_column(generated.column("sample_steps").to_pylist(), extracted, answers, tokens, per_variant)
    return curated.set_column(curated.schema.get_field_index(SAMPLES), SAMPLES, column)


def _curated_row(
    row: dict[str, Any], decision: Decision, tokens: list[float], method: str, model: str
) -> dict[str, Any]:
    return {
        "input_id": row["input_id"],
        "shard_id": int(row["shard_id"]),
        "prompt": row["prompt"],
        "status": "accepted" if decision.accepted else "rejected",
        "answer": decision.answer,
        "votes": decision.votes,
        "num_samples": decision.num_samples,
        "agreement": decision.votes / decision.num_samples if decision.num_samples else 0.0,
        "reason": decision.reason,
        "detail": decision.detail,
        "answer_counts": [{"answer": answer, "votes": votes} for answer, votes in decision.counts.items()],
        "method": method,
        "model": model,
        "system2_tokens": float(sum(tokens)) / len(tokens) if tokens else 0.0,
        "criterion": decision.criterion,
    }


def curate_majority(
    generated: pa.Table, answers: pa.ListArray, *, method: str, model: str, threshold: float
) -> pa.Table:
    """The majority rule over a batch, column by column: `answers` holds each input's normalised sample
    answers (None when unparseable); `generated` gives input_id, shard_id, prompt and sample_tokens."""
    votes = majority_votes(answers, threshold)
    size = generated.num_rows
    accepted = pc.is_null(votes.column("reason"))
    num_samples, top_votes = votes.column("num_samples"), votes.column("votes")
    tokens = _combined(generated.column("sample_tokens"))
    token_counts = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy()
    token_sums = np.bincount(
        np.repeat(np.arange(size), token_counts),
        minlength=size,
        weights=tokens.flatten().to_numpy(zero_copy_only=False).astype(np.float64),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_tokens = np.where(token_counts > 0, token_sums / token_counts, 0.0)
        agreement = np.where(num_samples.to_numpy() > 0, top_votes.to_numpy() / num_samples.to_numpy(), 0.0)
    columns = {
        "status": pc.if_else(accepted, "accepted", "rejected"),
        "input_id": generated.column("input_id"),
        "shard_id": generated.column("shard_id"),
        "prompt": generated.column("prompt"),
        "answer": votes.column("answer"),
        "votes": top_votes,
        "num_samples": num_samples,
        "agreement": pa.array(agreement),
        "method": pa.repeat(method, size),
        "model": pa.repeat(model, size),
        "system2_tokens": pa.array(mean_tokens),
        "criterion": pa.repeat("majority", size),
        "reason": votes.column("reason"),
        "detail": pc.if_else(accepted, "", _majority_detail(votes, threshold)),
        "answer_counts": votes.column("answer_counts"),
    }
    return pa.table(
        {
            name: columns.get(name, pa.nulls(size, field.type))
            for name, field in zip(CURATED_SCHEMA.names, CURATED_SCHEMA)
        }
    ).cast(CURATED_SCHEMA)


def _majority_detail(votes: pa.Table, threshold: float) -> pa.Array:
    """`_vote_detail` for every row of `majority_votes`."""
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


def _combined(column: pa.ChunkedArray) -> pa.Array:
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
