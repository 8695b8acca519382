"""Self-consistency curation: extract each sample's final answer, normalise it, and vote.

Pure functions over plain rows, so the Ray Data stage is a thin loop and the rules are unit-testable.
Every input row yields exactly one curated row, accepted or rejected with a reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from engine.answers import extract_final_answer
from engine.tasks import get_task


@dataclass(frozen=True)
class Vote:
    answer: str | None
    votes: int
    num_samples: int
    counts: dict[str, int]
    reason: str | None  # None when accepted

    @property
    def accepted(self) -> bool:
        return self.reason is None


def majority_vote(answers: Sequence[str | None], threshold: float) -> Vote:
    """Accept the most frequent answer when its share of *all* samples is strictly above `threshold`.

    Unparseable samples (None) count in the denominator: a model that mostly fails to answer is not
    self-consistent. Ties for the top answer are rejected, whatever the threshold.
    """
    num_samples = len(answers)
    counts = Counter(answer for answer in answers if answer is not None)
    if not counts:
        return Vote(None, 0, num_samples, {}, "no_answer")
    ranked = counts.most_common()
    top_answer, top_votes = ranked[0]
    ordered = dict(ranked)
    if len(ranked) > 1 and ranked[1][1] == top_votes:
        return Vote(None, top_votes, num_samples, ordered, "tie")
    if top_votes / num_samples <= threshold:
        return Vote(None, top_votes, num_samples, ordered, "below_threshold")
    return Vote(top_answer, top_votes, num_samples, ordered, None)


def sample_answers(task_name: str, texts: Sequence[str]) -> list[str | None]:
    task = get_task(task_name)
    return [task.normalize(extract_final_answer(text)) for text in texts]


def curate_row(row: dict[str, Any], *, task: str, threshold: float, method: str, model: str) -> dict[str, Any]:
    """One generated row (n sample texts) -> one curated row with `status` accepted or rejected."""
    answers = sample_answers(task, row["sample_texts"])
    vote = majority_vote(answers, threshold)
    tokens = row["sample_tokens"]
    system2_tokens = float(sum(tokens)) / len(tokens) if tokens else 0.0
    detail = ""
    if not vote.accepted:
        top = next(iter(vote.counts.items()), None)
        detail = (
            f"top answer {top[0]!r} has {top[1]}/{vote.num_samples} votes, need > {threshold:g}"
            if top else f"no parseable answer in {vote.num_samples} samples"
        )
    return {
        "input_id": row["input_id"],
        "shard_id": int(row["shard_id"]),
        "prompt": row["prompt"],
        "status": "accepted" if vote.accepted else "rejected",
        "answer": vote.answer,
        "votes": vote.votes,
        "num_samples": vote.num_samples,
        "agreement": vote.votes / vote.num_samples if vote.num_samples else 0.0,
        "reason": vote.reason,
        "detail": detail,
        "answer_counts": json.dumps(vote.counts, ensure_ascii=False),
        "method": method,
        "model": model,
        "system2_tokens": system2_tokens,
    }
