"""The majority vote over one input's normalised sample answers: the rule every consistency criterion builds on.

Two forms with one meaning: `majority_vote` decides one input (the reference, used where a rule votes per
variant or per held-out input), `majority_votes` decides a whole batch of inputs with array operations and
no Python per row, for the curation path at millions of samples. Both order an input's answer counts by
votes, most first, then by answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# An input's answer distribution, as a Parquet-native column: most votes first, ties by answer.
ANSWER_COUNTS_TYPE = pa.list_(pa.struct([("answer", pa.string()), ("votes", pa.int64())]))
_REASONS = pa.array(["below_threshold", "tie", "no_answer"])


@dataclass(frozen=True)
class Vote:
    answer: str | None
    votes: int
    num_samples: int
    counts: dict[str, int]  # most votes first, ties by answer
    reason: str | None  # None when accepted

    @property
    def accepted(self) -> bool:
        return self.reason is None


def ranked_counts(answers: Iterable[str | None]) -> dict[str, int]:
    """Votes per parsed answer (None skipped), most votes first, ties by answer: the order of every answer_counts."""
    counts = Counter(answer for answer in answers if answer is not None)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def majority_vote(answers: Sequence[str | None], threshold: float) -> Vote:
    """Accept the most frequent answer when its share of *all* samples is strictly above `threshold`.

    Unparseable samples (None) count in the denominator: a model that mostly fails to answer is not
    self-consistent. Ties for the top answer are rejected, whatever the threshold.
    """
    num_samples = len(answers)
    ordered = ranked_counts(answers)
    if not ordered:
        return Vote(None, 0, num_samples, {}, "no_answer")
    ranked = list(ordered.items())
    top_answer, top_votes = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top_votes:
        return Vote(None, top_votes, num_samples, ordered, "tie")
    if top_votes / num_samples <= threshold:
        return Vote(None, top_votes, num_samples, ordered, "below_threshold")
    return Vote(top_answer, top_votes, num_samples, ordered, None)


def majority_votes(answers: pa.Array | pa.ChunkedArray, threshold: float) -> pa.Table:
    """`majority_vote` for every input of a batch at once: `answers` is a list<string> array, one list per input.

    Returns one row per input: answer (null unless accepted), top_answer (the first of answer_counts, null
    when there is none), votes, num_samples, reason (null when accepted) and answer_counts (ANSWER_COUNTS_TYPE).
    Counting is one sort of (input, answer code) keys, with codes ranked in answer order so that each
    input's counts come out grouped and ordered by answer.
    """
    if isinstance(answers, pa.ChunkedArray):
        answers = answers.combine_chunks() if answers.num_chunks else pa.array([], pa.list_(pa.string()))
    num_inputs = len(answers)
    num_samples = pc.fill_null(pc.list_value_length(answers), 0).to_numpy().astype(np.int64)
    flat = answers.flatten()  # the values of the non-null lists, in order
    inputs_of_flat = np.repeat(np.arange(num_inputs, dtype=np.int64), num_samples)
    encoded = pc.dictionary_encode(flat)
    by_answer = pc.array_sort_indices(encoded.dictionary)
    sorted_dictionary = encoded.dictionary.take(by_answer)  # code -> answer, codes in answer order
    code_of_index = np.empty(len(by_answer), dtype=np.int64)
    code_of_index[by_answer.to_numpy()] = np.arange(len(by_answer))
    parsed = pc.is_valid(encoded.indices).to_numpy(zero_copy_only=False)
    codes = code_of_index[pc.fill_null(encoded.indices, 0).to_numpy()[parsed]]
    width = max(len(code_of_index), 1)
    keys = np.sort(inputs_of_flat[parsed] * width + codes)

    # One entry per distinct (input, answer), grouped by input and ordered by answer within it.
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    entry_votes = np.diff(np.r_[starts, len(keys)]).astype(np.int64)
    entry_input, entry_code = np.divmod(keys[starts], width)
    # Most votes first within each input; the stable sort keeps answer order among equal votes.
    most = int(entry_votes.max()) + 1 if len(entry_votes) else 1
    order = np.argsort(entry_input * most + (most - 1 - entry_votes), kind="stable")
    entry_input, entry_code, entry_votes = entry_input[order], entry_code[order], entry_votes[order]

    entries_per_input = np.bincount(entry_input, minlength=num_inputs)
    offsets = np.r_[0, np.cumsum(entries_per_input)].astype(np.int32)
    has_answer, contested = entries_per_input > 0, entries_per_input > 1
    top_code, top_votes, runner_up_votes = (np.zeros(num_inputs, dtype=np.int64) for _ in range(3))
    top_code[has_answer] = entry_code[offsets[:-1][has_answer]]
    top_votes[has_answer] = entry_votes[offsets[:-1][has_answer]]
    runner_up_votes[contested] = entry_votes[offsets[:-1][contested] + 1]
    tie = contested & (runner_up_votes == top_votes)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = top_votes / num_samples <= threshold

    accepted = has_answer & ~tie & ~below
    reason_code = np.where(~has_answer, 2, np.where(tie, 1, 0))  # REASONS, in majority_vote's order of checks

    counts = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [sorted_dictionary.take(pa.array(entry_code)), pa.array(entry_votes)],
            fields=list(ANSWER_COUNTS_TYPE.value_type),
        ),
    )
    return pa.table(
        {
            "answer": sorted_dictionary.take(pa.array(top_code, mask=~accepted)),
            "top_answer": sorted_dictionary.take(pa.array(top_code, mask=~has_answer)),
            "votes": pa.array(top_votes),
            "num_samples": pa.array(num_samples),
            "reason": _REASONS.take(pa.array(reason_code, mask=accepted)),
            "answer_counts": counts,
        }
    )
