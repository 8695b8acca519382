"""One real job, end to end, on the embedded default: local Ray, vLLM's CPU build, the packaged model, DeepSpeed.

The stages run once (module fixture) at a size that fits CI's 2 cores; the tests then read what they wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import s2d
from s2d.engine.cli import main
from s2d.engine.core.spec import load_spec
from s2d.engine.core.tasks import get_task

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
# The demo's pairing (few-shot CoT x last_letter_one), small but real: 8 inputs x 4 samples. Threshold 0
# (plurality, ties rejected) so that the weak 135M model yields some accepted inputs to train on.
OVERRIDES = [
    "task.num_inputs=8",
    "sampling.n=4",
    "sampling.max_tokens=48",
    "curate.threshold=0.0",
    "output.inputs_per_shard=3",
    "train.epochs=1",
    "train.micro_batch_size=2",
    "eval.num_inputs=4",
    "eval.max_tokens=16",
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, ray_session):
    """The generate stage through the Python API, the way the CLI calls it (`s2d.run_job`)."""
    out = tmp_path_factory.mktemp("job") / "run"
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in OVERRIDES)}
    result = s2d.run_job(DEMO, stages=("generate",), progress=False, out=str(out), **overrides)
    return result, out


@pytest.fixture(scope="module")
def job(generated):
    _, out = generated
    args = [str(DEMO), *OVERRIDES, f"out={out}", "--no-progress"]
    return load_spec(DEMO, [*OVERRIDES, f"out={out}"]), args


def test_run_job_returns_what_it_committed(generated, job):
    result, out = generated
    spec, _ = job
    assert isinstance(result, s2d.JobResult) and result.train is None and result.eval is None
    assert result.spec == spec  # keyword overrides mean what the CLI's key=value overrides mean
    manifest = json.loads((out / "manifest.json").read_text())
    assert (result.generate.inputs, result.generate.skipped_committed) == (8, 0)
    counts = (result.generate.accepted, result.generate.rejected, result.generate.quarantined)
    assert counts == tuple(manifest["counts"][name] for name in ("accepted", "rejected", "quarantined"))
    assert result.generate.out == str(out) and result.generate.seconds > 0


def test_every_input_lands_in_exactly_one_of_shards_or_rejected(job):
    spec, _ = job
    out = spec.out_path
    inputs = {item.input_id for item in get_task("last_letter_one").generate(8, 0, "train")}
    accepted = pq.read_table(out / "shards").to_pandas()  # the whole folder reads as one table
    rejected = pd.read_parquet(out / "rejected")
    assert set(accepted.input_id).isdisjoint(rejected.input_id)
    assert sorted([*accepted.input_id, *rejected.input_id]) == sorted(inputs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_shards"] == 3 and len(manifest["shards"]) == 3
    assert manifest["counts"]["accepted"] + manifest["counts"]["rejected"] == 8
    assert len(accepted) >= 1, "plurality vote over 4 samples accepted nothing; the train stage needs rows"
    stages = json.loads((out / "metrics.json").read_text())["stage_seconds"]  # what bench/e2e_demo.sh reports
    assert stages["curate (in Ray tasks)"] > 0 and stages["replica start + first batch"] > 0
    assert stages["generate + curate pipeline"] >= stages["replica start + first batch"]


def test_shard_schema(job):
    spec, _ = job
    table = pq.read_table(spec.out_path / "shards")
    types = {field.name: str(field.type) for field in table.schema}
    assert {
        "input_id": "string",
        "prompt": "string",
        "answer": "string",
        "votes": "int64",
        "num_samples": "int64",
        "method": "string",
        "model": "string",
        "system2_tokens": "double",
    }.items() <= types.items()
    row = table.to_pylist()[0]
    assert row["num_samples"] == 4 and 1 <= row["votes"] <= 4 and row["method"] == "cot_fewshot"
    assert row["model"] == "smollm2-135m" and row["system2_tokens"] > 0
    assert row["prompt"].startswith("What is the last letter of the word") and row["answer"]
    rejected = pq.read_table(spec.out_path / "rejected")
    assert {"input_id", "reason"} <= set(rejected.schema.names)
    assert set(rejected.column("reason").to_pylist()) <= {"tie", "below_threshold", "no_answer"}


def test_rerun_skips_committed_shards(job, capsys):
    spec, args = job
    before = {path.name: path.stat().st_mtime_ns for path in (spec.out_path / "shards").iterdir()}
    assert main(["generate", *args]) == 0
    assert "(8 already committed)" in capsys.readouterr().out
    assert before == {path.name: path.stat().st_mtime_ns for path in (spec.out_path / "shards").iterdir()}


def test_changed_spec_on_same_out_is_refused(job, capsys):
    _, args = job
    assert main(["generate", *args, "sampling.n=2"]) == 2
    assert "different job spec" in capsys.readouterr().err


def test_train_then_eval(job, capfd):
    spec, args = job
    assert main(["train", *args]) == 0
    model = spec.out_path / "model"
    assert (model / "adapter_config.json").is_file() and (model / "adapter_model.safetensors").is_file()
    assert main(["eval", *args]) == 0
    console = capfd.readouterr()
    # Ray Train, DeepSpeed and vLLM wrote to <out>/logs/; the console has s2d's lines only.
    assert "Traceback" not in console.out + console.err and "ERROR" not in console.out + console.err
    assert console.out.splitlines()[-1].startswith("  report")
    logged = {path.name.split("-")[0] for path in (spec.out_path / "logs").iterdir()}
    assert {"train", "eval"} <= logged  # each CLI stage's log (generate here ran through the Python API)
    metrics = json.loads((spec.out_path / "eval" / "metrics.json").read_text())
    systems = {score["system"]: score for score in metrics["systems"]}
    # System 1, System 2 (one sample and the majority of sampling.n), distilled
    assert len(systems) == 4 and all(score["total"] == 4 for score in systems.values())
    reference = metrics["agreement_reference"]
    assert reference["threshold"] == 0.0 and 0 <= reference["inputs"] <= 4
    for score in systems.values():  # agreement with System 2's vote wherever it has a reference answer
        if reference["inputs"] and "majority" not in score["system"]:
            assert score["agreement_low"] <= score["agreement"] <= score["agreement_high"]
    assert metrics["engine_start_s"] > 0
    assert all(0.0 <= score["accuracy"] <= 1.0 and score["tokens_per_answer"] > 0 for score in systems.values())
    report = (spec.out_path / "eval" / "report.md").read_text()
    assert "Distilled System 1" in report and "| accuracy [95% CI] |" in report and "agrees with System 2" in report
    assert all(
        score["latency_s"] > 0 and score["ci_low"] <= score["accuracy"] <= score["ci_high"]
        for score in systems.values()
    )
    assert (spec.out_path / "eval" / "report.png").read_bytes()[:4] == b"\x89PNG"
