"""eval.seeds on real Ray Train + DeepSpeed and vLLM (CPU): `s2d train` + `s2d eval` with two seeds on a tiny
committed set (training_data.py, no generate stage), then a rerun that keeps the finished seed.

One train + eval run (module fixture) serves every assertion.
"""

from __future__ import annotations

import json

import pytest
from training_data import commit_shards, last_letter_rows

import s2d
from s2d.engine.core.spec import parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def seeded_run(ray_session, packaged_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "run"
    commit_shards(out, last_letter_rows(8))
    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "out": str(out),
            "task": {"name": "last_letter", "num_inputs": 8},
            "method": {"name": "cot"},
            "sampling": {"n": 2, "max_tokens": 16},
            "train": {"num_workers": 1, "micro_batch_size": 4, "epochs": 1, "checkpoint_every_steps": 0},
            "eval": {"num_inputs": 4, "max_tokens": 8, "seeds": 2},
        }
    )
    result = s2d.run_job(spec, stages=("train", "eval"), progress=False)
    return spec, result


def test_each_seed_trains_its_own_model_with_its_own_training_seed(seeded_run):
    spec, result = seeded_run
    seed0, seed1 = spec.out_path.resolve() / "model", spec.out_path.resolve() / "model-seed1"
    assert [(entry["seed"], entry["train_seed"], entry["reused"]) for entry in result.train.seeds] == [
        (0, 0, False),
        (1, 1, False),
    ]
    assert result.train.model_dir == str(seed0) and result.train.seeds[1]["model_dir"] == str(seed1)
    for folder in (seed0, seed1):
        assert (folder / "adapter_config.json").is_file()
    assert (spec.out_path / "train_ray-seed1").is_dir()  # its own Ray Train run: seed 0's checkpoints stay
    # same pairs, another adapter initialisation and batch order: other weights
    assert (seed0 / "adapter_model.safetensors").read_bytes() != (seed1 / "adapter_model.safetensors").read_bytes()


def test_eval_reports_each_seed_and_the_spread(seeded_run):
    spec, result = seeded_run
    metrics = json.loads((spec.out_path / "eval" / "metrics.json").read_text())
    seeds = metrics["seeds"]
    assert seeds["count"] == 2 and [entry["seed"] for entry in seeds["per_seed"]] == [0, 1]
    dirs = [entry["model_dir"] for entry in seeds["per_seed"]]
    assert dirs == [str((spec.out_path / name).resolve()) for name in ("model", "model-seed1")]
    accuracies = [entry["accuracy"] for entry in seeds["per_seed"]]
    assert seeds["accuracy"]["values"] == accuracies
    assert seeds["accuracy"]["low"] == min(accuracies) and seeds["accuracy"]["high"] == max(accuracies)
    distilled = next(score for score in metrics["systems"] if score["kind"] == "distilled")
    assert distilled["accuracy"] == accuracies[0] and {entry["total"] for entry in seeds["per_seed"]} == {4}
    assert [score["kind"] for score in metrics["systems"]].count("distilled") == 1  # seed 1 is no row of its own
    report = (spec.out_path / "eval" / "report.md").read_text()
    assert "Seeds (eval.seeds): the distillation trained 2 times" in report and "2 seeds)**" in report


def test_a_rerun_keeps_the_finished_seed(seeded_run):
    spec, _ = seeded_run
    kept = spec.out_path / "model-seed1" / "train_metrics.json"
    before = (kept.stat().st_mtime_ns, kept.read_bytes())
    again = s2d.run_job(spec, stages=("train",), progress=False).train
    assert again.seeds[1]["reused"] and again.seeds[1]["steps"] > 0
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == before
