import random

import pyarrow as pa
import pytest

from s2d.engine.core.votes import majority_vote, majority_votes
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import generated_table


@pytest.mark.parametrize(
    "answers, threshold, accepted, answer, reason",
    [
        (["a"] * 5 + ["b"] * 3, 0.5, True, "a", None),
        (["a"] * 4 + ["b"] * 4, 0.5, False, None, "tie"),
        (["a"] * 4 + ["b", "c", "d", "e"], 0.5, False, None, "below_threshold"),  # 4/8 is not a strict majority
        (["a"] * 4 + ["b", "c", "d", "e"], 0.49, True, "a", None),
        (["a", "a", None, None, None], 0.5, False, None, "below_threshold"),  # unparseable samples still count
        ([None, None], 0.5, False, None, "no_answer"),
        (["a"], 0.5, True, "a", None),
        (["a", "b", "b"], 0.0, True, "b", None),
    ],
)
def test_majority_vote(answers, threshold, accepted, answer, reason):
    vote = majority_vote(answers, threshold)
    assert (vote.accepted, vote.answer, vote.reason) == (accepted, answer, reason)
    assert vote.num_samples == len(answers)


def test_counts_are_ordered_by_votes_then_answer():
    assert list(majority_vote(["b", "c", "a", "c", "b", "d"], 0.5).counts.items()) == [
        ("b", 2),
        ("c", 2),
        ("a", 1),
        ("d", 1),
    ]


def _random_inputs(rng: random.Random, count: int) -> list[list[str | None] | None]:
    vocabulary = ["a", "b", "c", "é", "10", "1", "", "a b", "zz"]
    inputs = []
    for _ in range(count):
        n = rng.choice([0, 1, 2, 3, 4, 5, 8, 8, 8, 16])
        pool = rng.sample(vocabulary, rng.randint(1, 4))
        none_rate = rng.choice([0.0, 0.2, 1.0])
        inputs.append([None if rng.random() < none_rate else rng.choice(pool) for _ in range(n)])
    return inputs


@pytest.mark.parametrize("seed", range(20))
def test_vectorized_vote_equals_the_reference(seed):
    rng = random.Random(seed)
    inputs = _random_inputs(rng, rng.choice([0, 1, 7, 300]))
    threshold = rng.choice([0.0, 0.25, 0.5, 0.5, 0.75])
    array = pa.array(inputs, pa.list_(pa.string()))
    if len(inputs) > 4:  # a slice and several chunks: the offsets of a real batch
        array = pa.chunked_array([array.slice(0, 3), array.slice(3)])
    votes = majority_votes(array, threshold).to_pylist()
    assert len(votes) == len(inputs)
    for answers, row in zip(inputs, votes):
        vote = majority_vote(answers, threshold)
        counts = [(entry["answer"], entry["votes"]) for entry in row["answer_counts"]]
        assert (row["answer"], row["votes"], row["num_samples"], row["reason"], counts) == (
            vote.answer,
            vote.votes,
            vote.num_samples,
            vote.reason,
            list(vote.counts.items()),
        ), answers
        assert row["top_answer"] == next(iter(vote.counts), None)


def test_every_reason_occurs_in_the_random_cases():
    rng = random.Random(0)
    inputs = _random_inputs(rng, 300)
    reasons = {row["reason"] for row in majority_votes(pa.array(inputs, pa.list_(pa.string())), 0.5).to_pylist()}
    assert reasons == {None, "tie", "below_threshold", "no_answer"}


def _generated(*texts_per_input):
    return generated_table(
        [
            {
                "input_id": f"id{index}",
                "shard_id": 3,
                "prompt": "p",
                "samples": [
                    {"sample": sample, "text": text, "tokens": 10 + index} for sample, text in enumerate(texts)
                ],
            }
            for index, texts in enumerate(texts_per_input)
        ]
    )


def test_curated_table_accepts_with_votes_and_tokens():
    (row,) = curate_generated(
        _generated(["Answer: abcd"] * 3 + ["Answer: xyz"]), task="last_letter", threshold=0.5, method="rar2", model="m"
    ).to_pylist()
    assert row["status"] == "accepted" and row["answer"] == "abcd" and row["votes"] == 3 and row["num_samples"] == 4
    assert row["system2_tokens"] == 10.0 and row["shard_id"] == 3 and row["detail"] == ""
    assert row["answer_counts"] == [{"answer": "abcd", "votes": 3}, {"answer": "xyz", "votes": 1}]


def test_curated_table_rejects_with_reason_and_detail():
    tie, garbage, low = curate_generated(
        _generated(["Answer: abcd", "Answer: xyz"], ["", "12345"], ["Answer: ab", "", ""]),
        task="last_letter",
        threshold=0.5,
        method="rar2",
        model="m",
    ).to_pylist()
    assert tie["status"] == "rejected" and tie["reason"] == "tie" and tie["answer"] is None
    assert tie["detail"] == "top answer 'abcd' has 1/2 votes, need > 0.5"
    assert garbage["reason"] == "no_answer" and garbage["detail"] == "no parseable answer in 2 samples"
    assert low["reason"] == "below_threshold" and low["agreement"] == 1 / 3 and low["system2_tokens"] == 12.0


def test_a_batch_in_chunks_and_slices_curates_as_one():
    """Ray Data hands curation a block that may be several chunks, each a slice of a bigger table."""
    whole = _generated(["Answer: abcd"] * 3, ["Answer: ab", "Answer: cd"], ["Answer: x", "", "Answer: x"])
    kwargs = dict(task="last_letter", threshold=0.5, method="rar2", model="m")
    chunked = pa.Table.from_batches(whole.slice(1).to_batches(max_chunksize=1))
    assert chunked.column("samples").num_chunks == 2
    assert curate_generated(chunked, **kwargs).to_pylist() == curate_generated(whole, **kwargs).to_pylist()[1:]
