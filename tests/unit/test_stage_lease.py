"""Every stage leases the output (issue 25, part 4): train and eval hold the lease generate takes, refuse an
unfinished generate unless allowed, and replace `<out>/model/` and `<out>/eval/` whole. No Ray here: every
refusal comes before it starts."""

from __future__ import annotations

import os
import threading

import pytest

from s2d.engine.cli import main, parse_args
from s2d.engine.core.spec import parse_spec
from s2d.engine.data.folder_swap import clear_leftovers, exchange, replace_folder, staging_folder
from s2d.engine.data.lease import LEASE, Lease, OutputBusy
from s2d.engine.data.ownership import is_swap_folder_name, swap_folder_name
from s2d.engine.data.shards import ShardWriter, curated_table
from s2d.engine.stages.api import run_job
from s2d.engine.stages.evaluate import run_eval, write_eval_folder
from s2d.training.trainer import UnfinishedOutput, train_model


def partial_output(out, num_shards=3, committed=(0, 1)):
    """An output whose generate committed only `committed` of its `num_shards` shards (two inputs each)."""
    rows = [
        {
            "input_id": f"id{shard}-{index}",
            "shard_id": shard,
            "status": "rejected",
            "votes": 1,
            "num_samples": 2,
            "agreement": 0.5,
            "method": "rar2",
            "model": "smollm2-135m",
            "system2_tokens": 10.0,
            "prompt": f"q{shard}-{index}",
            "answer": None,
        }
        for shard in range(num_shards)
        for index in range(2)
    ]
    writer = ShardWriter.open(out, num_shards, "fp", {shard: 2 for shard in range(num_shards)})
    writer.add(curated_table([row for row in rows if row["shard_id"] in committed]))
    return parse_spec({"model": "smollm2-135m", "out": str(out)})


def _job_file(tmp_path, out):
    job = tmp_path / "job.yaml"
    job.write_text(f"model: smollm2-135m\nout: {out}\n")
    return str(job)


def test_train_and_eval_refuse_an_unfinished_generate_with_one_line(tmp_path):
    spec = partial_output(tmp_path / "run")
    for stage in (train_model, run_eval):
        with pytest.raises(UnfinishedOutput) as refused:
            stage(spec)
        line = str(refused.value)
        assert "\n" not in line and "2 of 3 shards committed" in line
        assert "rerun `s2d generate` to finish it, or pass --allow-partial" in line
    # Allowed, each goes on to its next check (still before Ray): nothing accepted to train on, no model to evaluate.
    with pytest.raises(ValueError, match="no accepted examples"):
        train_model(spec, allow_partial=True)
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run_eval(spec, allow_partial=True)


@pytest.mark.parametrize("stage", ["train", "eval"])
def test_the_cli_refuses_a_partial_output_and_allow_partial_lets_it_through(tmp_path, capsys, stage):
    out = tmp_path / "run"
    partial_output(out)
    job = _job_file(tmp_path, out)
    assert main([stage, job, "-v"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "2 of 3 shards committed" in err and "--allow-partial" in err
    assert not (out / LEASE).exists(), "the refused stage released the lease it held"
    assert main([stage, job, "-v", "--allow-partial"]) == 1  # past the refusal, to the stage's next check
    err = capsys.readouterr().err
    assert "shards committed" not in err and ("no accepted examples" in err or "no trained model" in err)
    assert parse_args(["run", job, "--allow-partial"]).allow_partial, "run takes the flag too"


@pytest.mark.parametrize("stage", ["train", "eval"])
def test_a_stage_on_an_output_another_job_holds_stops_at_once_with_exit_75(tmp_path, capsys, stage):
    out = tmp_path / "run"
    partial_output(out, committed=(0, 1, 2))
    job = _job_file(tmp_path, out)
    (out / "model").mkdir()
    (out / "model" / "weights").write_text("old")
    with Lease.acquire(out, command="s2d train", timeout_s=30) as holder:
        assert main([stage, job, "-v"]) == 75
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"job {holder.owner} (s2d train" in err
        assert "is being written by" in err
        with pytest.raises(OutputBusy):
            run_job(str(job), [stage])
        holder.check()  # still the holder's
    assert not (out / "job.yaml").exists(), "the refused job wrote nothing"
    assert (out / "model" / "weights").read_text() == "old"


def _folder(path, version, files=3):
    path.mkdir()
    for index in range(files):
        (path / f"part-{index}").write_text(version)


def test_replace_folder_swaps_in_the_new_folder_whole_and_leaves_no_temporary_name(tmp_path):
    target = tmp_path / "model"
    first = staging_folder(target)
    assert is_swap_folder_name(first.name, "model") and first.parent == tmp_path
    (first / "w").write_text("1")
    replace_folder(first, target)  # no old one: a rename
    second = staging_folder(target)
    (second / "w").write_text("2")
    (second / "merged").mkdir()
    replace_folder(second, target)
    assert (target / "w").read_text() == "2" and (target / "merged").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_the_model_folder_is_never_missing_while_it_is_replaced(tmp_path):
    target = tmp_path / "model"
    _folder(target, "0")
    probe = staging_folder(target)
    if not exchange(probe, target):
        pytest.skip("this filesystem cannot exchange two names atomically (the two-rename fallback has a gap)")
    exchange(probe, target)
    probe.rmdir()
    stop, missing = threading.Event(), []

    def read():
        while not stop.is_set():
            if not (target / "part-0").is_file():
                missing.append(True)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 200):
            staged = staging_folder(target)
            for index in range(3):
                (staged / f"part-{index}").write_text(str(version))
            replace_folder(staged, target)
    finally:
        stop.set()
        reader.join()
    assert not missing and (target / "part-2").read_text() == "199"


def test_an_interrupted_swap_is_repaired_and_only_s2ds_names_are_removed(tmp_path):
    target = tmp_path / "model"
    _folder(target, "old")
    _folder(tmp_path / swap_folder_name("model", "a" * 12, "tmp"), "new")  # crashed while writing the new one
    users = [tmp_path / ".model.notes", tmp_path / ".model.backup.tmp", tmp_path / "model.tmp"]
    for path in users:
        path.write_text("the user's")
    removed = clear_leftovers(target)
    assert [path.name for path in removed] == [swap_folder_name("model", "a" * 12, "tmp")]
    assert (target / "part-0").read_text() == "old" and all(path.read_text() == "the user's" for path in users)

    # A crash between the fallback's two renames: model/ aside, the new one not yet in place.
    target.rename(tmp_path / swap_folder_name("model", "b" * 12, "old"))
    _folder(tmp_path / swap_folder_name("model", "c" * 12, "tmp"), "new")
    clear_leftovers(target)
    assert (target / "part-0").read_text() == "old", "the whole old model is put back"
    assert not [path for path in tmp_path.iterdir() if is_swap_folder_name(path.name, "model")]


def test_the_eval_folder_is_replaced_whole_keeping_a_users_files(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for name in ("metrics.json", "report.md", "report.png"):
        (eval_dir / name).write_text("old")
    (eval_dir / "my-notes.txt").write_text("the user's")
    metrics = {
        "task": "last_letter",
        "method": "rar2",
        "model": "smollm2-135m",
        "eval_inputs": 2,
        "run": str(tmp_path),
        "systems": [
            {"system": "System 1", "kind": "system1", "accuracy": 0.5, "correct": 1, "total": 2, "samples": 2,
             "tokens_per_answer": 3.0, "ci_low": 0.1, "ci_high": 0.9},
        ],
    }  # fmt: skip
    write_eval_folder(eval_dir, metrics)
    assert sorted(os.listdir(eval_dir)) == ["metrics.json", "my-notes.txt", "report.md", "report.png"]
    assert all((eval_dir / name).read_bytes() != b"old" for name in ("metrics.json", "report.md", "report.png"))
    assert (eval_dir / "my-notes.txt").read_text() == "the user's"  # s2d replaces only its own files
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval"]
