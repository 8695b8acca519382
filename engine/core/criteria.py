"""Consistency criteria: the decisions that keep or drop an input, and what a method's templates see.

Pure (no Ray, no vLLM, no I/O but the criteria's prompt file). The rules (`curate.rule`):
- majority: the top answer of the n samples needs more than `threshold` of the votes (s2d.engine.core.votes);
- perturbation: each input also runs as k-1 rewrites (s2d.engine.core.perturb) whose answers, mapped back,
  must all agree (`perturbation_decision`);
- usc (universal self-consistency): one greedy judge call picks the most consistent of the n responses, and its
  final answer is kept (`usc_decision`).
The table-level curation over a batch of generated rows is s2d.engine.data.curation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from s2d.engine.core.methods import Extractor, render_template, resolve_method
from s2d.engine.core.perturb import get_perturbation
from s2d.engine.core.tasks import Task, TaskInput, get_task, input_fields_of, task_variables
from s2d.engine.core.votes import Vote, majority_vote, ranked_counts

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
