"""A small real job run as a user runs it (its own process, its own embedded Ray): a quiet console, and an
output ready to publish (samples, the dataset card read by `datasets`, the messages export, `s2d inspect`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2d.engine.cli import main
from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.shards import read_committed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo.yaml"
# rar2's two steps, so every sample has a chain; plurality vote, so some inputs are accepted.
OVERRIDES = [
    "task.name=last_letter",
    "method.name=rar2",
    "task.num_inputs=8",
    "sampling.n=4",
    "sampling.max_tokens=32",
    "output.inputs_per_shard=4",
    "curate.threshold=0.0",
]
NOISE = re.compile(r"Traceback|ERROR|EngineDeadError|\bE \d+ \d+\]|WARNING|INFO")


@pytest.fixture(scope="module")
def quiet_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "run"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "s2d.engine.cli", "generate", str(DEMO), *OVERRIDES, f"out={out}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done


def test_a_successful_run_prints_only_its_own_lines_and_logs_the_rest(quiet_job):
    out, done = quiet_job
    console = done.stdout + done.stderr
    assert not NOISE.search(console), console
    printed = done.stdout.splitlines()  # the progress bar is on stderr
    assert printed[0].startswith("s2d: generate") and "logs ->" in printed[0]
    assert printed[1].startswith("generate: 8 inputs") and printed[-1].startswith("  card") and len(printed) <= 10
    assert len([line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]) <= 10, done.stderr
    (log,) = (out / "logs").glob("generate-*.log")
    text = log.read_text()
    assert "GenerationReplica" in text and "vLLM" in text, "the libraries' output is in the log"
    # The engine is closed before its actor exits: vLLM does not report its own shutdown as an engine failure.
    assert "EngineDeadError" not in text and "Traceback" not in text


def test_samples_are_committed_with_their_shards(quiet_job):
    out, _ = quiet_job
    accounting = check_accounting(out)
    assert accounting.ok and accounting.samples == 8 * 4
    samples = read_committed(out, "samples").to_pylist()
    assert {tuple(step["name"] for step in sample["steps"]) for sample in samples} == {("rephrase", "respond")}
    assert all(sample["tokens"] > 0 for sample in samples)


def test_the_card_makes_the_output_a_datasets_dataset(quiet_job, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, _ = quiet_job
    # datasets caches a local folder by its name and config only (seen here: an earlier run's "run" came back), so
    # each test reads through a cache of its own
    cache = {"cache_dir": str(tmp_path / "hf-cache")}
    card = (out / "README.md").read_text()
    assert "Given the above question, rephrase" in card and "smollm2-135m" in card
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert len(datasets.load_dataset(str(out), split="train", **cache)) == counts["accepted"]
    assert len(datasets.load_dataset(str(out), "rejected", split="train", **cache)) == counts["rejected"]
    assert len(datasets.load_dataset(str(out), "samples", split="train", **cache)) == counts["samples"] == 32


def test_messages_export_gives_the_training_examples(quiet_job, packaged_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from s2d.training.sft import build_examples
    from s2d.training.trainer import read_accepted_rows

    out, _ = quiet_job
    to = tmp_path / "pairs.jsonl"
    assert main(["export", str(out), "--to", str(to)]) == 0
    exported = [
        {"prompt": m[0]["content"], "answer": m[1]["content"]}
        for m in (json.loads(line)["messages"] for line in to.read_text().splitlines())
    ]
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir)
    assert exported and build_examples(exported, tokenizer, 256) == build_examples(
        read_accepted_rows(out), tokenizer, 256
    )


def test_inspect_shows_real_samples(quiet_job, capsys):
    out, _ = quiet_job
    assert main(["inspect", str(out), "-n", "1"]) == 0
    text = capsys.readouterr().out
    assert "8 inputs" in text and "32 samples" in text and "sample 3:" in text and "respond: " in text
