"""Iterated distillation end to end on the packaged model: `s2d run --rounds 2` as a user runs it, killed with -9 in
round 2, then the same command again: round 2 resumes and completes, round 1 is read back, not redone, and both
rounds' outputs and the report across rounds are there. Minutes (two whole jobs): the slow tier."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from test_faults import start_user_job
from test_job import DEMO
from test_no_orphans import TAG, assert_nothing_left

from s2d.engine.cli import main
from s2d.engine.data.manifest import read_manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The demo's pairing, as small as test_job's (plurality vote, so the 135M model keeps some inputs in each round).
OVERRIDES = [
    "task.num_inputs=12",
    "sampling.n=4",
    "sampling.max_tokens=48",
    "curate.threshold=0.0",
    "output.inputs_per_shard=4",
    "train.epochs=1",
    "train.micro_batch_size=2",
    "eval.num_inputs=6",
    "eval.max_tokens=16",
]


def files_and_times(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_two_rounds_killed_in_round_two_resume_without_redoing_round_one(tmp_path, ray_session, capsys):
    out = tmp_path / "rounds"
    args = ["run", str(DEMO), *OVERRIDES, f"out={out}", "--rounds", "2", "--no-progress"]
    started = time.monotonic()
    tag = uuid.uuid4().hex
    os.environ[TAG] = tag  # start_user_job copies this environment: every process of the job carries the tag
    try:
        driver = start_user_job(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        del os.environ[TAG]
    round_two = out / "round-2"
    try:
        deadline = time.monotonic() + 480
        while not list(round_two.glob(".parts/*/*")) and not (round_two / "manifest.json").is_file():
            assert driver.poll() is None, f"the job ended before round 2: {driver.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "round 2 never started generating"
            time.sleep(0.2)
        assert not (round_two / "eval").exists(), "round 2 finished before the kill"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid round 2
        killed_at = time.monotonic()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    first_run_s = time.monotonic() - started
    assert_nothing_left(tag, killed_at)  # its engines too: the rerun needs their memory

    recorded = json.loads((out / "rounds.json").read_text())
    assert [row["round"] for row in recorded["rows"]] == [1]  # round 1 finished and recorded before the kill
    round_one = files_and_times(out / "round-1")
    assert "eval/metrics.json" in round_one and "model/merged/config.json" in round_one

    capsys.readouterr()
    rerun_started = time.monotonic()
    assert main(args) == 0
    printed = capsys.readouterr().out
    rerun_s = time.monotonic() - rerun_started
    assert "round 1 of 2: done earlier, not redone" in printed, printed
    assert "round 2 of 2: generate + train + eval" in printed, printed
    assert files_and_times(out / "round-1") == round_one  # not one file of round 1 rewritten

    sampler = str((out / "round-1" / "model" / "merged").resolve())
    for number in (1, 2):
        folder = out / f"round-{number}"
        manifest = read_manifest(folder)
        assert manifest is not None and len(manifest.committed) == manifest.num_shards == 3
        assert manifest.counts.accepted + manifest.counts.rejected + manifest.counts.quarantined == 12
        assert (folder / "model" / "adapter_config.json").is_file() and (folder / "eval" / "report.md").is_file()
    metrics = json.loads((round_two / "eval" / "metrics.json").read_text())
    assert metrics["model"] == sampler and metrics["student"] == "smollm2-135m"  # sampled by round 1, base retrained
    report = json.loads((out / "rounds.json").read_text())
    assert [row["round"] for row in report["rows"]] == [1, 2]
    assert report["rows"][0]["sampler"] == "smollm2-135m" and report["rows"][1]["sampler"] == sampler
    assert report["rows"][0] == recorded["rows"][0]  # read back the same from round 1's verified files
    for row in report["rows"]:
        assert row["distilled_accuracy"]["value"] is not None and row["system2_accuracy"]["value"] is not None
        assert row["tokens_per_sample"]["value"] > 0 and row["accepted"] >= 1
    table = (out / "rounds.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "rounds.md" in printed
    print(f"\nfirst run (killed in round 2) {first_run_s:.0f} s, rerun {rerun_s:.0f} s")
