"""`s2d pilot` end to end on the demo's pairing at a tiny size (generate, a LoRA, eval: real Ray, vLLM, DeepSpeed),
and its refusals, which start nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import s2d
from s2d.engine.cli import main
from s2d.engine.data.ownership import claim_output

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
# The demo's pairing, small but real (as tests/integration/test_job.py): plurality vote so that a few inputs pass.
TINY = {
    "sampling.n": 4,
    "curate.threshold": 0.0,
    "train.epochs": 1,
    "train.micro_batch_size": 2,
    "eval.max_tokens": 16,
}


def test_a_users_folder_is_refused_before_anything_runs(tmp_path, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    assert main(["pilot", str(DEMO), f"out={users}", "--inputs", "4", "--no-progress"]) == 2
    assert "not an s2d output" in capsys.readouterr().err
    assert [path.name for path in users.iterdir()] == ["notes.txt"]


@pytest.mark.slow  # three engine starts and a DeepSpeed LoRA: ~2-3 minutes on 2 cores
def test_a_tiny_pilot_writes_its_report_and_leaves_out_to_the_full_job(tmp_path, ray_session):
    out = tmp_path / "job"
    lines: list[str] = []
    result = s2d.pilot(DEMO, inputs=8, held_out=6, progress=False, on_line=lines.append, out=str(out), **TINY)
    assert result.verdict in ("distils", "does not distil", "inconclusive")
    metrics = json.loads((out / "pilot" / "metrics.json").read_text())
    assert metrics["inputs"] == 8 and metrics["full_inputs"] == 288 and metrics["verdict"]["label"] == result.verdict
    assert metrics["accepted"] + metrics["rejected"] + metrics["quarantined"] == 8
    assert len(metrics["threshold_curve"]) == 4 and metrics["labels"]
    assert metrics["threshold_curve"][metrics["job_min_votes"] - 1]["accepted"] == metrics["accepted"]
    assert metrics["projection"]["full_inputs"] == 288 and metrics["rate"]["seconds_per_input"] > 0
    report = (out / "pilot" / "report.md").read_text()
    assert f"**Verdict: {result.verdict}**" in report and "replica-hours = (288 inputs x" in report
    assert any(line.startswith("pilot: generate:") for line in lines) and lines[-1].startswith("pilot: verdict:")
    if metrics["accepted"]:
        assert metrics["held_out"] <= 6 and metrics["train"]["examples"] == metrics["accepted"]
    claim_output(out, create=True)  # the full job may still write into <out>, beside pilot/
    assert not (out / "manifest.json").exists()
