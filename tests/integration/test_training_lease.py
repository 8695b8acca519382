"""`s2d train` as a user runs it holds the output's lease and refuses an unfinished generate (issue 25, part 4).

One real training run (1 worker, LoRA, ZeRO-2 on CPU) on an output whose generate committed 2 of 3 shards:
refused without --allow-partial; with it, it trains on the committed rows while a second train started on the
same output stops at once with exit 75 and one line naming the first; the first completes and swaps its model in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from test_faults import start_user_job
from training_data import commit_shards, last_letter_rows

pytestmark = pytest.mark.integration

TRAIN = "{deepspeed: zero2, micro_batch_size: 2, epochs: 1, num_workers: 1, checkpoint_every_steps: 0}"


def test_two_trains_on_one_out_the_second_stops_with_exit_75_and_a_partial_output_needs_the_flag(
    packaged_model_dir, tmp_path
):
    out = tmp_path / "run"
    commit_shards(out, last_letter_rows(12), num_shards=3, committed={0, 1})  # 8 of 12 rows committed
    job = tmp_path / "job.yaml"
    job.write_text(f"model: smollm2-135m\nout: {out}\ntrain: {TRAIN}\n")
    args = ["train", str(job), "--no-progress"]

    refused = start_user_job(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = refused.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("s2d: error")]
    assert refused.returncode == 1 and len(lines) == 1, err
    assert "2 of 3 shards committed: rerun `s2d generate` to finish it, or pass --allow-partial" in lines[0]
    assert not (out / "model").exists() and not (out / ".lease.json").exists()

    first = start_user_job([*args, "--allow-partial"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lease.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first train never took the lease"
            time.sleep(0.2)
        second = start_user_job([*args, "--allow-partial"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, second_err = second.communicate(timeout=120)
        assert first.poll() is None, "the second stopped while the first was still training"
        lines = [line for line in second_err.splitlines() if line.startswith("s2d:")]
        assert second.returncode == 75, second_err
        assert len(lines) == 1 and "is being written by job" in lines[0] and f"pid {first.pid}" in lines[0], lines
        assert "(s2d train," in lines[0], "it names the holder's command"
        first_out, first_err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, first_err
    assert "train: " in first_out and "8 examples" in first_out, first_out
    metrics = json.loads((out / "model" / "train_metrics.json").read_text())
    assert metrics["rows"] == 8 and metrics["model_dir"] == str(out / "model")
    assert (out / "model" / "adapter_config.json").is_file()
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".model")) == [], "no temporary name"
    assert not (out / ".lease.json").exists(), "released at the end"
