"""The majority vote over one input's normalised sample answers: the rule every consistency criterion builds on.

Pure, so the voting rules are unit-testable; `engine.consistency` turns generated rows into curated rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence



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
