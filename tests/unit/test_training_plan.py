"""The pure arithmetic of training: the global micro-batch plan, each rank's share, the lr schedule, the fingerprint."""

from __future__ import annotations

import math

import pytest

from s2d.engine.core.spec import SpecError, TrainSpec, parse_spec
from s2d.training.plan import (
    lr_factor,
    micro_batches,
    packed_rows,
    padded_to_steps,
    rank_micro_batches,
    run_fingerprint,
    warmup_steps,
)


@pytest.mark.parametrize("batching", ["length_grouped", "shuffled"])
def test_an_epoch_covers_every_example_once_and_is_seeded(batching):
    lengths = [5, 40, 7, 33, 12, 9, 28, 3, 17]
    batches = micro_batches(lengths, 2, batching, seed=0)
    assert sorted(i for batch in batches for row in batch for i in row) == list(range(9))
    assert all(len(row) == 1 for batch in batches for row in batch)  # one example per sequence unless packed
    assert sorted(map(len, batches)) == [1, 2, 2, 2, 2]
    assert batches == micro_batches(lengths, 2, batching, seed=0)
    assert batches != micro_batches(lengths, 2, batching, seed=1)


def test_length_grouping_cuts_padding():
    lengths = [10, 200] * 50

    def padding(batches):
        sizes = [[lengths[row[0]] for row in batch] for batch in batches]
        return sum(max(batch) * len(batch) - sum(batch) for batch in sizes)

    grouped = micro_batches(lengths, 4, "length_grouped", seed=0)
    shuffled = micro_batches(lengths, 4, "shuffled", seed=0)
    assert padding(grouped) < padding(shuffled) / 5


def test_packing_fills_sequences_up_to_max_seq_len_without_splitting_examples():
    lengths = [30, 50, 20, 70, 10, 40, 60]
    batches = micro_batches(lengths, 2, "packed", seed=0, max_seq_len=100)
    rows = [row for batch in batches for row in batch]
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows)
    assert len(rows) < len(lengths)  # several examples share a sequence
    assert packed_rows([120, 10], [0, 1], 100) == [[0], [1]]  # an example longer than the limit stays whole
    assert batches == micro_batches(lengths, 2, "packed", seed=0, max_seq_len=100)


def test_plan_wraps_to_whole_steps():
    plan = padded_to_steps([[0], [1], [2], [3], [4]], micro_batches_per_step=4)
    assert plan == [[0], [1], [2], [3], [4], [0], [1], [2]]
    assert padded_to_steps([[0]], 4) == [[0]] * 4  # fewer micro batches than one step still makes a step


def test_a_step_covers_the_same_micro_batches_whatever_the_split():
    plan = [[i] for i in range(16)]
    for step in range(2):
        one_worker = rank_micro_batches(plan, step, rank=0, world_size=1, accumulation=4)
        two_workers = [batch for rank in (0, 1) for batch in rank_micro_batches(plan, step, rank, 2, 2)]
        four_workers = [batch for rank in range(4) for batch in rank_micro_batches(plan, step, rank, 4, 1)]
        assert sorted(one_worker) == sorted(two_workers) == sorted(four_workers) == plan[step * 4 : step * 4 + 4]


def test_warmup_rises_from_above_zero_to_the_peak():
    assert warmup_steps(100, 0.1) == 10 and warmup_steps(20, 0.03) == 0
    factors = [lr_factor(step, 100, 10, "cosine") for step in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[0] > 0
    assert factors[10] == 1.0 and all(a < b for a, b in zip(factors[:10], factors[1:11]))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # then it only decays
    assert 0 < factors[-1] < 0.01


@pytest.mark.parametrize("schedule, midpoint", [("cosine", 0.5), ("linear", 0.5), ("constant", 1.0)])
def test_schedules_decay_as_named(schedule, midpoint):
    assert lr_factor(50, 100, 0, schedule) == pytest.approx(midpoint)
    assert lr_factor(0, 100, 0, schedule) == 1.0
    assert lr_factor(99, 100, 0, schedule) > 0


def test_cosine_follows_the_cosine():
    assert lr_factor(25, 100, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_fingerprint_changes_with_data_model_and_training_spec():
    rows = [{"prompt": "p", "answer": "a"}]
    train = TrainSpec().model_dump(mode="json")
    base = run_fingerprint(train, "m", rows)
    assert base == run_fingerprint(dict(train), "m", [dict(rows[0])])
    assert base != run_fingerprint(train, "m", rows + rows)
    assert base != run_fingerprint(train, "other", rows)
    assert base != run_fingerprint(TrainSpec(seed=1).model_dump(mode="json"), "m", rows)


def test_train_spec_fields_and_their_errors():
    spec = parse_spec(
        {
            "model": "m",
            "train": {
                "mode": "full",
                "deepspeed": "zero3_offload",
                "lr_schedule": "linear",
                "batching": "shuffled",
                "checkpoint_every_steps": 0,
            },
        }
    )
    assert spec.train.mode == "full" and spec.train.lr_schedule == "linear"
    for bad in (
        "train.mode=qlora",
        "train.lr_schedule=step",
        "train.batching=bucketed",
        "train.lora.target_modules=[]",
        "train.warmup_ratio=1.5",
        "eval.distilled=both",
    ):
        with pytest.raises(SpecError):
            parse_spec({"model": "m"}, [bad])


def test_run_folder_is_kept_for_the_same_fingerprint_and_cleared_for_another(tmp_path):
    from s2d.training.trainer import RUN_NAME, _claim_run_dir

    run_dir = tmp_path / RUN_NAME
    run_dir.mkdir()
    (run_dir / "checkpoint_1").mkdir()  # a run of unknown origin (no fingerprint recorded): not resumed
    _claim_run_dir(tmp_path, "aaaa")
    assert not run_dir.exists()
    (run_dir / "checkpoint_1").mkdir(parents=True)
    _claim_run_dir(tmp_path, "aaaa")
    assert (run_dir / "checkpoint_1").is_dir()  # same run: Ray Train will resume it
    _claim_run_dir(tmp_path, "bbbb")
    assert not run_dir.exists()  # changed spec or data: start afresh
