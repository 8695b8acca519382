"""Universal self-consistency (usc): one greedy judge call picks the most consistent of an input's n responses,
and that response's final answer is kept (for free-form answers that a vote cannot compare)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from s2d.engine.core.answers import parse_usc_choice
from s2d.engine.core.criteria.base import (
    Ballots,
    CriterionOptions,
    Decision,
    GeneratedInput,
    decisions_table,
    sample_inputs,
)
from s2d.engine.core.methods import Method, render_template
from s2d.engine.core.program import Generator, SamplingRequest
from s2d.engine.core.tasks import Task, TaskInput
from s2d.engine.core.votes import ranked_counts

USC_PROMPT_FILE = Path(__file__).parents[1] / "prompts" / "criteria" / "usc.yaml"
# The judge is asked to start with its choice; a few tokens more leave room for "Response 12".
USC_MAX_TOKENS = 32


class UniversalSelfConsistency:
    name = "usc"
    description = "one more LLM call picks the most consistent of the n responses; its answer is kept"
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
        chains = sample_inputs(generator, method, task, items, prompts, request)
        judge_prompts = [
            usc_prompt(item.question, [chain.final_text for chain in per_input])
            for item, per_input in zip(items, chains)
        ]
        judge = SamplingRequest(n=1, temperature=0.0, max_tokens=USC_MAX_TOKENS)
        outputs = generator.generate(judge_prompts, judge) if judge_prompts else []
        return [
            GeneratedInput(
                [per_input],
                judge_choice=parse_usc_choice(completion.text, request.n),
                judge_tokens=completion.num_tokens,
            )
            for per_input, (completion,) in zip(chains, outputs)
        ]

    def decide(self, ballots: Ballots, options: CriterionOptions) -> pa.Table:
        choices = ballots.judge_choice.to_pylist()
        return decisions_table(
            usc_decision(answers or [], choice) for answers, choice in zip(ballots.answers.to_pylist(), choices)
        )


def usc_decision(answers: Sequence[str | None], choice: int | None) -> Decision:
    """Keep the final answer of the response the USC judge chose; reject when it chose none or that has none."""
    counts = ranked_counts(answers)
    if choice is None or not 0 <= choice < len(answers):
        detail = f"the judge named none of the {len(answers)} responses"
        return Decision("usc", None, 0, len(answers), counts, "usc_no_choice", detail)
    answer = answers[choice]
    if answer is None:
        detail = f"the chosen response {choice + 1} has no parseable answer"
        return Decision("usc", None, 0, len(answers), counts, "no_answer", detail)
    return Decision("usc", answer, counts[answer], len(answers), counts, None)


@lru_cache(maxsize=1)
def _usc_prompt_file() -> dict[str, Any]:
    return yaml.safe_load(USC_PROMPT_FILE.read_text())


def usc_prompt(question: str, responses: Sequence[str]) -> str:
    data = _usc_prompt_file()
    per_response = min(data["response_chars"], data["total_chars"] // max(1, len(responses)))
    tails = [response[-per_response:] for response in responses]
    return render_template(data["prompt"], {"question": question, "responses": tails})
