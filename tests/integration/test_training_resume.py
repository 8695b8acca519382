"""A training job killed with SIGKILL after its first Ray Train checkpoint resumes from that checkpoint when rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_data import commit_shards, last_letter_rows

from s2d.engine.core.spec import parse_spec
from s2d.training.trainer import RUN_NAME, train_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DRIVER = (
    "import json, sys; from s2d.engine.core.spec import parse_spec; from s2d.training.trainer import train_model; "
    "train_model(parse_spec(json.loads(sys.argv[1])))"
)


def recorded_step(run_dir: Path) -> int | None:
    """The step of the checkpoint Ray Train has recorded as the latest (what a rerun restores), if any yet.

    A checkpoint folder appears before every rank has uploaded its part; only the run snapshot says it is complete.
    """
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        latest = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
        return json.loads((run_dir / latest / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):  # not there yet, or being written right now
        return None


def test_killed_run_resumes_from_its_last_checkpoint(ray_session, packaged_model_dir, tmp_path):
    commit_shards(tmp_path, last_letter_rows(16))
    # 16 examples, 2 workers x micro batch 2: 4 steps per epoch, 12 in all, a checkpoint every 2.
    train = {"num_workers": 2, "micro_batch_size": 2, "epochs": 3, "checkpoint_every_steps": 2, "seed": 1}
    data = {"model": "smollm2-135m", "out": str(tmp_path), "train": train}
    run_dir = tmp_path / "train_ray" / RUN_NAME

    # The first job joins this test's Ray cluster, so killing its driver ends its Ray Train workers too.
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    job = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(data)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while recorded_step(run_dir) is None:
            assert job.poll() is None, f"the training job exited ({job.returncode}) before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    killed_at = recorded_step(run_dir)
    assert killed_at is not None and killed_at < 12, killed_at

    metrics = train_model(parse_spec(data))  # the rerun, in this process

    resumed = metrics["resumed_from_step"]
    assert resumed == killed_at
    assert [entry["step"] for entry in metrics["step_log"]] == list(range(1, 13))
    assert metrics["ranks"] == [{"rank": 0, "steps": 12 - resumed}, {"rank": 1, "steps": 12 - resumed}]
    assert metrics["losses"][-1] < metrics["losses"][0]
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()


def test_a_changed_spec_starts_afresh(ray_session, packaged_model_dir, tmp_path):
    commit_shards(tmp_path, last_letter_rows())
    train = {"num_workers": 2, "micro_batch_size": 2, "epochs": 1, "checkpoint_every_steps": 1}
    first = train_model(parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "train": train}))
    again = train_model(parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "train": train}))
    changed = train_model(parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "train": train | {"seed": 5}}))
    assert first["resumed_from_step"] is None
    assert again["reused_finished_run"] and again["losses"] == first["losses"]  # nothing retrained
    assert not changed["reused_finished_run"] and changed["resumed_from_step"] is None
