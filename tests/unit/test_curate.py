import json

import pytest

from engine.consistency import curate_generated_row
from engine.curate import majority_vote


@pytest.mark.parametrize("answers, threshold, accepted, answer, reason", [
    (["a"] * 5 + ["b"] * 3, 0.5, True, "a", None),
    (["a"] * 4 + ["b"] * 4, 0.5, False, None, "tie"),
    (["a"] * 4 + ["b", "c", "d", "e"], 0.5, False, None, "below_threshold"),  # 4/8 is not a strict majority
    (["a"] * 4 + ["b", "c", "d", "e"], 0.49, True, "a", None),
    (["a", "a", None, None, None], 0.5, False, None, "below_threshold"),  # unparseable samples still count
    ([None, None], 0.5, False, None, "no_answer"),
    (["a"], 0.5, True, "a", None),
    (["a", "b", "b"], 0.0, True, "b", None),
])
def test_majority_vote(answers, threshold, accepted, answer, reason):
    vote = majority_vote(answers, threshold)
    assert (vote.accepted, vote.answer, vote.reason) == (accepted, answer, reason)
    assert vote.num_samples == len(answers)


def _row(texts):
    return {"input_id": "id1", "shard_id": 3, "prompt": "p", "sample_texts": texts, "sample_tokens": [10] * len(texts)}


def test_curated_row_accepts_with_votes_and_tokens():
    row = curate_generated_row(_row(["Answer: abcd"] * 3 + ["Answer: xyz"]), task="last_letter", threshold=0.5, method="rar2", model="m")
    assert row["status"] == "accepted" and row["answer"] == "abcd" and row["votes"] == 3 and row["num_samples"] == 4
    assert row["system2_tokens"] == 10.0 and row["shard_id"] == 3
    assert json.loads(row["answer_counts"]) == {"abcd": 3, "xyz": 1}


def test_curated_row_rejects_with_reason_and_detail():
    row = curate_generated_row(_row(["Answer: abcd", "Answer: xyz"]), task="last_letter", threshold=0.5, method="rar2", model="m")
    assert row["status"] == "rejected" and row["reason"] == "tie" and row["answer"] is None
    garbage = curate_generated_row(_row(["", "12345"]), task="last_letter", threshold=0.5, method="rar2", model="m")
    assert garbage["reason"] == "no_answer" and "no parseable answer" in garbage["detail"]
