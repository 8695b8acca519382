"""Iterated distillation (rounds): each round's job, when a round is done, the table across rounds, and the rounds'
orchestration with a stand-in for a round's stages (real manifests, shards, lease and ownership; no Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s2d.engine.cli.parser import parse_args
from s2d.engine.core.rounds import (
    STAGES,
    Estimate,
    render_rounds,
    round_dir,
    round_keys,
    round_row,
    round_spec,
    rounds_json,
    row_from_json,
    stages_to_redo,
    tokens_per_sample,
)
from s2d.engine.core.spec import SpecError, parse_spec
from s2d.engine.core.stats import wilson_interval
from s2d.engine.data.fingerprint import generation_fingerprint
from s2d.engine.data.manifest import OutputConflict
from s2d.engine.data.ownership import ForeignOutput, claim_output
from s2d.engine.data.shards import ShardWriter, curated_table
from s2d.engine.stages.api import run_job
from s2d.engine.stages.results import JobResult
from s2d.engine.stages.rounds import run_rounds


def job(out: Path | str = "runs/r", **values):
    return parse_spec({"model": "smollm2-135m", "out": str(out), "rounds": 2}, values=values)


# -- each round's job ------------------------------------------------------------------------------------------


def test_round_one_is_the_job_itself_in_its_own_folder_merging_its_adapter():
    spec = job("runs/r")
    first = round_spec(spec, 1, None)
    assert first.out == "runs/r/round-1" and first.rounds == 1 and first.model == spec.model
    assert first.train.merge and first.train.model is None  # the merged copy samples round 2
    same = first.model_dump() | {"out": spec.out, "rounds": 2, "train": spec.train.model_dump()}
    assert same == spec.model_dump()  # nothing else differs from the job as written


def test_a_later_round_samples_the_round_befores_model_and_trains_the_base_again(tmp_path):
    sampler = tmp_path / "round-1-merged"
    sampler.mkdir()
    (sampler / "config.json").write_text("{}")
    second = round_spec(job("runs/r"), 2, str(sampler))
    assert second.model == str(sampler) and second.out == "runs/r/round-2"
    assert second.train.model == "smollm2-135m" and second.has_student  # the base, not round 1's model
    student = round_spec(job("runs/r", **{"train.model": str(sampler)}), 2, "/some/merged")
    assert student.train.model == str(sampler)  # a student of its own stays the one trained


def test_a_full_fine_tune_is_its_own_sampler_and_merges_nothing():
    assert not round_spec(job(**{"train.mode": "full"}), 1, None).train.merge


def test_round_arguments_are_checked():
    with pytest.raises(ValueError, match="not one of the job's rounds"):
        round_spec(job(), 3, "/m")
    with pytest.raises(ValueError, match="round 1 samples from the job's model"):
        round_spec(job(), 1, "/m")
    with pytest.raises(ValueError, match="every later round"):
        round_spec(job(), 2, None)


def test_rounds_is_validated_and_set_from_the_command_line():
    with pytest.raises(SpecError, match="rounds"):
        parse_spec({"model": "smollm2-135m", "rounds": 0})
    assert parse_spec({"model": "smollm2-135m"}).rounds == 1
    args = parse_args(["run", "job.yaml", "out=x", "--rounds", "3"])
    assert args.overrides == ["out=x", "rounds=3"]
    with pytest.raises(SystemExit):
        parse_args(["generate", "job.yaml", "--rounds", "3"])  # a rounds job is `s2d run`


def test_round_dir_joins_under_out():
    assert round_dir("runs/r/", 2) == "runs/r/round-2" and round_dir("/abs", 1) == "/abs/round-1"


def test_a_round_redoes_only_the_stages_its_change_needs():
    spec = job()
    keys = round_keys(spec, "f")
    assert stages_to_redo(keys, keys) == ()
    assert stages_to_redo(None, keys) == STAGES  # never finished: every stage, each resuming what it committed
    assert stages_to_redo(keys | {"fingerprint": "g"}, keys) == STAGES  # other samples (a redone round before)
    evaluated = round_keys(job(**{"eval.num_inputs": 5}), "f")
    assert evaluated["training"] == keys["training"] and stages_to_redo(keys, evaluated) == ("eval",)
    trained = round_keys(job(**{"train.epochs": 5}), "f")
    assert stages_to_redo(keys, trained) == ("train", "eval")
    assert round_keys(job(out="elsewhere"), "f") == keys  # where the round is, not what it is


# -- the table across rounds --------------------------------------------------------------------------------------


def test_tokens_per_sample_weights_inputs_by_their_samples_with_the_input_as_the_unit():
    estimate = tokens_per_sample([(10.0, 4), (20.0, 4), (30.0, 2)])
    assert estimate.value == pytest.approx((40 + 80 + 60) / 10)
    assert estimate.low < estimate.value < estimate.high
    # residuals 40-72, 80-72, 60-36 over 10 samples, 3 inputs: the linearised variance by hand
    half = 1.959963984540054 * ((3 / 2) * ((40 - 72) ** 2 + (80 - 72) ** 2 + (60 - 36) ** 2) / 100) ** 0.5
    assert estimate.high - estimate.value == pytest.approx(half)
    assert tokens_per_sample([(7.0, 3)]) == Estimate(7.0, 7.0, 7.0)
    assert tokens_per_sample([]).value is None and tokens_per_sample([(5.0, 0)]).value is None


KEYS = {"fingerprint": "f", "training": "t", "job": "j"}


def metrics(distilled=0.25, agreement=0.6):
    return {
        "eval_inputs": 20,
        "agreement_reference": {"threshold": 0.3, "inputs": 10},
        "systems": [
            {"system": "System 1 (base model, direct)", "kind": "system1", "accuracy": 0.1, "ci_low": 0.03,
             "ci_high": 0.3, "agreement": 0.3, "agreement_low": 0.1, "agreement_high": 0.6},
            {"system": "System 2 (cot_fewshot, single sample, mean of 4)", "kind": "system2", "accuracy": 0.15,
             "ci_low": 0.08, "ci_high": 0.26, "agreement": 0.5, "agreement_low": 0.4, "agreement_high": 0.6},
            {"system": "System 2 (cot_fewshot, majority of 4)", "kind": "system2", "accuracy": 0.2,
             "ci_low": 0.08, "ci_high": 0.42, "agreement": None},
            {"system": "Distilled System 1 (base + LoRA, direct)", "kind": "distilled", "accuracy": distilled,
             "ci_low": 0.11, "ci_high": 0.47, "agreement": agreement, "agreement_low": 0.31,
             "agreement_high": 0.83},
        ],
    }  # fmt: skip


def test_a_rounds_row_takes_each_number_with_its_interval():
    row = round_row(2, "/m", KEYS, {"accepted": 3, "rejected": 5, "quarantined": 1}, [(10.0, 4)], metrics())
    assert (row.inputs, row.accepted) == (8, 3)  # a quarantined row never reached the model
    assert row.accepted_share == Estimate(3 / 8, *wilson_interval(3, 8))
    assert row.system2_accuracy == Estimate(0.2, 0.08, 0.42)  # the majority, not the single sample
    assert row.system2_single == Estimate(0.15, 0.08, 0.26)
    assert row.distilled_accuracy == Estimate(0.25, 0.11, 0.47)
    assert row.distilled_agreement == Estimate(0.6, 0.31, 0.83)
    assert row.base_system1.value == 0.1 and (row.eval_inputs, row.reference_inputs) == (20, 10)
    assert row_from_json(json.loads(rounds_json([row], 2))["rows"][0]) == row
    with pytest.raises(ValueError, match="not a round"):
        row_from_json({"round": 1})


def test_the_rounds_table_renders_every_round_and_says_what_was_not_measured():
    rows = [
        round_row(1, "smollm2-135m", KEYS, {"accepted": 3, "rejected": 5}, [(10.0, 4)], metrics()),
        round_row(2, "/r/round-1/model/merged", KEYS, {}, [], metrics(distilled=0.3, agreement=None)),
    ]
    text = render_rounds(rows, 3)
    assert text.startswith("# Iterated distillation: 2 of 3 rounds")
    lines = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(lines) == 2
    assert "3 of 8 = 37.5% [13.7%, 69.4%]" in lines[0] and "10.0 [10.0, 10.0]" in lines[0]
    assert "25.0% [11.0%, 47.0%]" in lines[0] and "60.0% [31.0%, 83.0%] (10 of 20)" in lines[0]
    assert "0 of 0" in lines[1] and "n/a" in lines[1] and "30.0%" in lines[1]


# -- the rounds, with a stand-in for each round's stages ----------------------------------------------------------


class FakeRounds:
    """Each call runs one round's 'stages': commits a real shard under the round's fingerprint (refused, as the
    real generate refuses, when the output holds another fingerprint's), writes model/merged/ and eval/."""

    def __init__(self, fail_in_round: int | None = None):
        self.calls: list = []
        self.fail_in_round = fail_in_round

    def __call__(self, spec, stages, *, force=False, allow_partial=False, progress=True, on_result=None):
        number = int(Path(spec.out).name.removeprefix("round-"))
        self.calls.append((number, spec, force, tuple(stages)))
        claim_output(spec.out)
        if "generate" in stages:
            writer = ShardWriter.open(spec.out, 1, generation_fingerprint(spec), {0: 2}, force=force)
            if self.fail_in_round == number:
                raise KeyboardInterrupt  # a round killed after its output was opened
            rows = [
                {"input_id": "a", "shard_id": 0, "status": "accepted", "prompt": "q", "answer": "x", "num_samples": 4,
                 "system2_tokens": 10.0},
                {"input_id": "b", "shard_id": 0, "status": "rejected", "prompt": "r", "answer": None,
                 "num_samples": 4, "system2_tokens": 20.0},
            ]  # fmt: skip
            writer.add(curated_table(rows))
        if "train" in stages:  # a new model: new weights (and files' times)
            merged = spec.out_path / "model" / "merged"
            merged.mkdir(parents=True, exist_ok=True)
            (merged / "config.json").write_text("{}")
            (merged / "model.safetensors").write_bytes(os.urandom(16))
        (spec.out_path / "eval").mkdir(exist_ok=True)
        (spec.out_path / "eval" / "metrics.json").write_text(json.dumps(metrics(distilled=0.1 * number)))
        return JobResult(spec, spec.out)


def test_two_rounds_run_in_order_each_sampling_the_round_befores_model(tmp_path, capsys):
    out = tmp_path / "rounds"
    fake = FakeRounds()
    result = run_rounds(job(out), fake, progress=False)
    assert [number for number, *_ in fake.calls] == [1, 2]
    first, second = fake.calls[0][1], fake.calls[1][1]
    assert first.model == "smollm2-135m" and first.train.merge
    assert second.model == str((out / "round-1" / "model" / "merged").resolve())
    assert second.train.model == "smollm2-135m"
    saved = json.loads((out / "rounds.json").read_text())
    assert saved["rounds"] == 2 and [row["round"] for row in saved["rows"]] == [1, 2]
    assert saved["rows"][1]["sampler"] == second.model
    assert saved["rows"][0]["tokens_per_sample"]["value"] == 15.0  # (10 x 4 + 20 x 4) / 8, read from the shards
    assert saved["rows"][1]["distilled_accuracy"]["value"] == 0.2
    assert "| 2 |" in (out / "rounds.md").read_text()
    assert result.rounds.rows == saved["rows"] and result.rounds.reused == []
    assert (out / "job.yaml").is_file() and (out / ".s2d-output.json").is_file()
    assert "round 1 of 2: generate + train + eval, sampled from smollm2-135m" in capsys.readouterr().out


def test_a_rerun_reads_finished_rounds_back_without_redoing_them(tmp_path, capsys):
    out = tmp_path / "rounds"
    run_rounds(job(out), FakeRounds(), progress=False)
    again = FakeRounds()
    result = run_rounds(job(out), again, progress=False)
    assert again.calls == [] and result.rounds.reused == [1, 2]
    assert "round 2 of 2: done earlier, not redone" in capsys.readouterr().out


def test_a_round_killed_midway_resumes_and_the_rounds_before_it_are_not_redone(tmp_path):
    out = tmp_path / "rounds"
    with pytest.raises(KeyboardInterrupt):
        run_rounds(job(out), FakeRounds(fail_in_round=2), progress=False)
    assert [row["round"] for row in json.loads((out / "rounds.json").read_text())["rows"]] == [1]
    again = FakeRounds()
    result = run_rounds(job(out), again, progress=False)
    assert [(number, force, stages) for number, _, force, stages in again.calls] == [(2, False, STAGES)]
    assert result.rounds.reused == [1]


def test_a_redone_round_makes_the_next_one_refuse_its_samples_until_forced(tmp_path):
    out = tmp_path / "rounds"
    run_rounds(job(out), FakeRounds(), progress=False)
    # round 1's model replaced (a retrain swaps model/ whole): round 2 was sampled from other weights
    weights = out / "round-1" / "model" / "merged" / "model.safetensors"
    weights.write_bytes(os.urandom(32))
    with pytest.raises(OutputConflict, match=r"round 2: .* holds samples of another sampler .* --force"):
        run_rounds(job(out), FakeRounds(), progress=False)
    forced = FakeRounds()
    run_rounds(job(out), forced, force=True, progress=False)
    assert [number for number, *_ in forced.calls] == [2]
    saved = json.loads((out / "rounds.json").read_text())["rows"]
    assert saved[1]["fingerprint"] == generation_fingerprint(forced.calls[0][1])


def test_a_changed_job_redoes_the_rounds_it_changes(tmp_path):
    out = tmp_path / "rounds"
    run_rounds(job(out), FakeRounds(), progress=False)
    again = FakeRounds()
    run_rounds(job(out, **{"eval.num_inputs": 7}), again, progress=False)
    # only eval changed: each round re-evaluates, its model (round 2's sampler) untouched, no refusal
    assert [(number, stages) for number, _, _, stages in again.calls] == [(1, ("eval",)), (2, ("eval",))]
    trained = FakeRounds()
    with pytest.raises(OutputConflict, match="round 2: "):  # round 1 retrained: round 2's sampler changed
        run_rounds(job(out, **{"train.epochs": 3}), trained, progress=False)
    assert [(number, stages) for number, _, _, stages in trained.calls] == [(1, ("train", "eval")), (2, STAGES)]


def test_rounds_write_only_into_a_folder_of_their_own(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(ForeignOutput, match="not an s2d output"):
        run_rounds(job(out), FakeRounds(), progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


def test_a_rounds_job_runs_only_as_a_whole_run(tmp_path):
    with pytest.raises(ValueError, match="rounds=2: a rounds job runs every stage"):
        run_job(job(tmp_path / "r"), ("generate",), progress=False)
    assert not (tmp_path / "r").exists()


def test_status_of_a_rounds_output_shows_each_round(tmp_path, capsys):
    from s2d.engine.cli import main

    out = tmp_path / "rounds"
    run_rounds(job(out), FakeRounds(), progress=False)
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 2 rounds" in printed
    assert f"{out / 'round-1'}: 1 / 1 shards committed" in printed and f"{out / 'round-2'}: 1 / 1" in printed
