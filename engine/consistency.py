"""Consistency criteria beyond a plain vote: perturbation agreement and universal self-consistency (USC).

Two halves, both pure (no Ray, no vLLM):
- generation (`generate_for_curation`): what the replica runs per batch of input rows for the job's
  criterion: the n samples, plus k-1 perturbed variants (perturbation) or one judge call (usc);
- decision (`curate_generated`): a batch of generated rows -> the curated table (engine.shards.CURATED_SCHEMA),
  one row per input, accepted or rejected, with the criterion that decided and its reason. The majority
  rule decides the whole batch with array operations (`curate_majority`); only the per-sample answer
  extraction is Python. Perturbation and USC decide row by row, into the same table.

Row contract between the two (columns a generated row carries, beyond input_id, shard_id, prompt):
  all rules      sample_texts [n] (the input's own samples), sample_tokens [n]
  perturbation   variant_texts [k][n], variant_tokens [k][n], variant_inverse [k] (JSON: variant answer ->
                 original answer); variant 0 is the input itself, so variant_texts[0] == sample_texts
  usc            usc_choice (0-based index into sample_texts, -1 when the judge named none), usc_tokens
  keep_samples   sample_steps [n] (or [k*n], variant by variant): each sample's chain as JSON (engine.samples);
                 when present, the curated rows carry the samples for the samples table
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from engine.answers import parse_usc_choice
from engine.curate import Vote, majority_vote, majority_votes, ranked_counts
from engine.methods import Extractor, Method, render_template, resolve_method
from engine.perturb import get_perturbation, invert_answer, make_variants
from engine.program import Generator, SamplingRequest, run_method
from engine.samples import SAMPLES, chain_json, samples_column
from engine.shards import CURATED_SCHEMA, curated_table
from engine.tasks import Task, TaskInput, get_task, input_fields_of, task_variables

USC_PROMPT_FILE = Path(__file__).parent / "prompts" / "criteria" / "usc.yaml"
# The judge is asked to start with its choice; a few tokens more leave room for "Response 12".
USC_MAX_TOKENS = 32
RULES = ("majority", "perturbation", "usc")


@dataclass(frozen=True)
class Decision:
    criterion: str
    answer: str | None
    votes: int  # samples whose (mapped-back) answer is the accepted or top answer
    num_samples: int
    counts: dict[str, int]  # pooled answer distribution, most votes first, ties by answer
    reason: str | None  # None when accepted
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def _vote_detail(vote: Vote, threshold: float) -> str:
    top = next(iter(vote.counts.items()), None)
    if top is None:
        return f"no parseable answer in {vote.num_samples} samples"
    return f"top answer '{top[0]}' has {top[1]}/{vote.num_samples} votes, need > {threshold:g}"


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
            detail = f"variant {index} of {len(votes)}: {_vote_detail(vote, variant_threshold)}"
            return Decision("perturbation", None, top_votes, num_samples, counts, f"variant_{vote.reason}", detail)
    answers = [vote.answer for vote in votes]
    if len(set(answers)) > 1:
        detail = "variant answers (mapped back): " + ", ".join(repr(answer) for answer in answers)
        return Decision("perturbation", None, top_votes, num_samples, counts, "variants_disagree", detail)
    return Decision("perturbation", answers[0], counts[answers[0]], num_samples, counts, None)


def usc_decision(answers: Sequence[str | None], choice: int | None) -> Decision:
    """Keep the final answer of the response the USC judge chose; reject when it chose none or that has none."""
    counts = ranked_counts(answers)
    if choice is None or not 0 <= choice < len(answers):
        return Decision(
            "usc",
            None,
            0,
            len(answers),
            counts,
            "usc_no_choice",
            f"the judge named none of the {len(answers)} responses",
        )
    answer = answers[choice]
    if answer is None:
        return Decision(
            "usc",
            None,
            0,
            len(answers),
            counts,
            "no_answer",
            f"the chosen response {choice + 1} has no parseable answer",
        )
    return Decision("usc", answer, counts[answer], len(answers), counts, None)


def sample_answers(task: Task, extractor: Extractor, texts: Sequence[str]) -> list[str | None]:
    return extracted_and_answers(task, extractor, texts)[1]


def extracted_and_answers(
    task: Task, extractor: Extractor, texts: Sequence[str]
) -> tuple[list[str | None], list[str | None]]:
    """Each text's extracted answer span, and its normalised form (what votes count)."""
    extracted = [extractor(text) for text in texts]
    return extracted, [task.normalize(span) for span in extracted]


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


def check_compatibility(task_name: str, method: str | dict[str, Any], rule: str, perturbation: str | None) -> None:
    """Raise ValueError when the method reads fields the task lacks, or the perturbation cannot rewrite it."""
    task, resolved = get_task(task_name), resolve_method(method)
    offered = set(input_fields_of(task)) | set(task_variables(task))
    missing = resolved.required_fields - offered
    if missing:
        raise ValueError(
            f"method {resolved.name!r} reads input fields {sorted(missing)}, which task "
            f"{task.name!r} does not have (its fields: {sorted(offered) or 'none'})"
        )
    if rule == "perturbation":
        if not perturbation:
            raise ValueError("curate.rule perturbation needs curate.perturbation (a perturbation name)")
        get_perturbation(perturbation).check_task(task)
    elif perturbation:
        raise ValueError(f"curate.perturbation is only used by rule perturbation, not {rule!r}")


# --- generation side: what a replica runs for a batch of input rows ---


@lru_cache(maxsize=1)
def _usc_prompt_file() -> dict[str, Any]:
    return yaml.safe_load(USC_PROMPT_FILE.read_text())


def usc_prompt(question: str, responses: Sequence[str]) -> str:
    data = _usc_prompt_file()
    per_response = min(data["response_chars"], data["total_chars"] // max(1, len(responses)))
    tails = [response[-per_response:] for response in responses]
    return render_template(data["prompt"], {"question": question, "responses": tails})


def _input_of(row: dict[str, Any]) -> TaskInput:
    fields = row.get("fields") or {}
    if isinstance(fields, str):
        fields = json.loads(fields) if fields else {}
    return TaskInput(str(row["input_id"]), str(row["question"]), None, fields)


def _context(task: Task, question: str, fields: dict[str, Any], system1_prompt: str | None = None) -> dict[str, Any]:
    return {
        **task_variables(task),
        **fields,
        "question": question,
        "system1_prompt": system1_prompt if system1_prompt is not None else task.system1_prompt(question),
    }


def input_context(task: Task, item: TaskInput) -> dict[str, Any]:
    """The variables a method's templates see for one input: question, system1_prompt and the task's fields."""
    return _context(task, item.question, dict(item.fields))


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
