"""What every consistency criterion is made of (s2d.engine.core.criteria registers them).

A criterion has two parts, both pure:
- *generate*: what a replica runs for a batch of inputs, against any `Generator` (s2d.engine.core.program), as
  plain Python objects (`GeneratedInput`); the data layer packs them into the replica -> curation Arrow contract
  (s2d.engine.data.generated);
- *decide*: given every sample's answer (`Ballots`, Arrow arrays of one entry per input), one decision per input
  (`DECISION_SCHEMA` rows); curation (s2d.engine.data.curation) turns them into curated rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from s2d.engine.core.answers import extract_final_answers
from s2d.engine.core.methods import Extractor, Method
from s2d.engine.core.program import Chain, Generator, SamplingRequest, run_method
from s2d.engine.core.tasks import Task, TaskInput, task_variables
from s2d.engine.core.votes import ANSWER_COUNTS_TYPE

# One decision per input: answer and reason are null unless accepted / rejected; votes are the samples whose
# (mapped-back) answer is the accepted or top answer; answer_counts the pooled answer distribution.
DECISION_SCHEMA = pa.schema(
    [
        ("answer", pa.string()),
        ("votes", pa.int64()),
        ("num_samples", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("answer_counts", ANSWER_COUNTS_TYPE),
    ]
)


@dataclass(frozen=True)
class CriterionOptions:
    """The job's `curate` section as the criteria read it."""

    threshold: float = 0.5
    per_variant_majority: bool = False
    perturbation: str | None = None
    variants: int = 2
    seed: int = 0  # the job's seed: perturbed variants are the same on every rerun


@dataclass
class GeneratedInput:
    """What a criterion's generate part produced for one input."""

    # Per variant, the method's n chains; variant 0 is the input itself (the only one for most criteria).
    variants: list[list[Chain]]
    # Per variant, its answer -> the input's answer (normalised answers; one not listed maps to itself).
    # None: the samples are the input's own, not numbered variants.
    inverses: list[dict[str, str]] | None = None
    judge_choice: int | None = None  # the sample (0-based, variant 0) a judge call chose; None: none chosen
    judge_tokens: int | None = None  # generated tokens of the judge call, shared by the input's samples


@dataclass(frozen=True)
class Ballots:
    """What a criterion decides on, for a batch of inputs: Arrow arrays of one entry per input."""

    answers: pa.ListArray  # every sample's normalised answer in the input's answer space (null: unparseable)
    variants: pa.ListArray  # each sample's variant, in the same layout (null: not a numbered variant)
    judge_choice: pa.Array  # int32: the sample a judge call chose (null: none)


class Criterion(Protocol):
    name: str
    description: str
    perturbs: bool  # reads curate.perturbation (any other criterion refuses it)

    def check(self, task: Task, perturbation: str | None) -> None:
        """Raise ValueError when this criterion cannot run on the task (a job spec is refused with it)."""
        ...

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
        """One GeneratedInput per item (prompts: each item's System 1 prompt); calls batched across items."""
        ...

    def decide(self, ballots: Ballots, options: CriterionOptions) -> pa.Table:
        """One DECISION_SCHEMA row per input of `ballots`."""
        ...


@dataclass(frozen=True)
class Decision:
    criterion: str
    answer: str | None
    votes: int  # samples whose (mapped-back) answer is the accepted or top answer
    num_samples: int
    counts: dict[str, int] = field(default_factory=dict)  # pooled answer distribution, most votes first
    reason: str | None = None  # None when accepted
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def decisions_table(decisions: Iterable[Decision]) -> pa.Table:
    """Decisions made one input at a time, as DECISION_SCHEMA rows."""
    return pa.Table.from_pylist(
        [
            {
                "answer": decision.answer,
                "votes": decision.votes,
                "num_samples": decision.num_samples,
                "reason": decision.reason,
                "detail": decision.detail,
                "answer_counts": [{"answer": answer, "votes": votes} for answer, votes in decision.counts.items()],
            }
            for decision in decisions
        ],
        schema=DECISION_SCHEMA,
    )


def sample_inputs(
    generator: Generator,
    method: Method,
    task: Task,
    items: Sequence[TaskInput],
    prompts: Sequence[str],
    request: SamplingRequest,
) -> list[list[Chain]]:
    """The method's n chains for each input as it is: the generate part most criteria share."""
    contexts = [method_context(task, item.question, item.fields, prompt) for item, prompt in zip(items, prompts)]
    return run_method(generator, method, contexts, request)


def sample_answers(task: Task, extractor: Extractor, texts: Sequence[str]) -> list[str | None]:
    return extracted_and_answers(task, extractor, texts)[1]


def extracted_and_answers(
    task: Task, extractor: Extractor, texts: Sequence[str]
) -> tuple[list[str | None], list[str | None]]:
    """Each text's extracted answer span, and its normalised form (what votes count)."""
    extracted = [extractor(text) for text in texts]
    return extracted, [task.normalize(span) for span in extracted]


def extracted_and_answers_array(task: Task, extractor: Extractor, texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """`extracted_and_answers` of a string array, as string arrays: the same spans and answers.

    The answer-marker extractor runs on the whole array (answers.extract_final_answers); the task normalises each
    distinct span once (the samples of an input mostly agree: that is what they vote on)."""
    if extractor.kind == "answer_marker":
        extracted = extract_final_answers(texts)
    else:
        extracted = pa.array([extractor(text) for text in texts.to_pylist()], pa.string())
    distinct = pc.unique(extracted)
    normalized = pa.array([task.normalize(span) for span in distinct.to_pylist()], pa.string())
    return extracted, normalized.take(pc.index_in(extracted, distinct))


def input_of(row: dict[str, Any]) -> TaskInput:
    """An input row (input_id, question, fields as a dict or its JSON) as the task input its templates see."""
    fields = row.get("fields") or {}
    if isinstance(fields, str):
        fields = json.loads(fields) if fields else {}
    return TaskInput(str(row["input_id"]), str(row["question"]), None, fields)


def method_context(
    task: Task, question: str, fields: dict[str, Any], system1_prompt: str | None = None
) -> dict[str, Any]:
    """The variables a method's templates see: the task's, the input's fields, question and system1_prompt."""
    return {
        **task_variables(task),
        **fields,
        "question": question,
        "system1_prompt": system1_prompt if system1_prompt is not None else task.system1_prompt(question),
    }


def input_context(task: Task, item: TaskInput) -> dict[str, Any]:
    """The variables a method's templates see for one input: question, system1_prompt and the task's fields."""
    return method_context(task, item.question, dict(item.fields))
