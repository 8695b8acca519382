"""eval.seeds: the seeds' folders and training seeds, the spread, what eval runs where, metrics.json and the report."""

from __future__ import annotations

import json

import pytest

from s2d.engine.cli.parser import parse_args
from s2d.engine.core.program import Chain, SamplingRequest
from s2d.engine.core.seeds import (
    format_spread,
    model_folder,
    seed_entry,
    seed_kind,
    seeds_summary,
    seeds_table,
    spread,
    train_run_folder,
    training_seed,
)
from s2d.engine.core.spec import SpecError, parse_spec
from s2d.engine.core.tasks import TaskInput
from s2d.engine.stages.api import seed_spec
from s2d.engine.stages.chart import plot_runs
from s2d.engine.stages.eval_systems import replica_plans, seed_models
from s2d.engine.stages.evaluate import _metrics
from s2d.engine.stages.report import render_report

DIRECT = SamplingRequest(n=1, temperature=0.0, max_tokens=8)
SAMPLED = SamplingRequest(n=4, temperature=0.7, max_tokens=8)


def test_seed_zero_keeps_todays_folders_and_seed_s_offsets_the_training_seed():
    assert [model_folder(seed) for seed in range(3)] == ["model", "model-seed1", "model-seed2"]
    assert [train_run_folder(seed) for seed in range(3)] == ["train_ray", "train_ray-seed1", "train_ray-seed2"]
    assert [seed_kind(seed) for seed in range(3)] == ["distilled", "distilled_seed1", "distilled_seed2"]
    assert [training_seed(7, seed) for seed in range(3)] == [7, 8, 9]
    for name in (model_folder, train_run_folder, seed_kind):
        with pytest.raises(ValueError):
            name(-1)
    spec = parse_spec({"model": "smollm2-135m", "train": {"seed": 5, "epochs": 3}})
    seeded = seed_spec(spec, 2)
    assert seeded.train.seed == 7 and seeded.train.epochs == 3 and spec.train.seed == 5
    assert seeded.model_dump(exclude={"train"}) == spec.model_dump(exclude={"train"})


def test_the_spread_is_mean_min_max_of_the_seeds_that_have_the_measure():
    found = spread([0.21, None, 0.26, 0.25])
    assert (found.count, found.low, found.high) == (3, 0.21, 0.26)
    assert found.mean == pytest.approx(0.24)
    assert spread([None, float("nan")]) is None and spread([]) is None
    assert format_spread(found.as_dict()) == "24.0% (21.0-26.0%, 3 seeds)"
    assert format_spread(None) == "n/a"


def test_seeds_summary_carries_each_seed_and_the_spread():
    score = {"accuracy": 0.2, "ci_low": 0.1, "ci_high": 0.3, "correct": 4, "total": 20, "agreement": None}
    entries = [
        seed_entry(0, 3, "/o/model", score),
        seed_entry(1, 3, "/o/model-seed1", score | {"accuracy": 0.3}, versus_base={"difference": 0.1}),
    ]
    summary = seeds_summary(entries)
    assert summary["count"] == 2 and [entry["train_seed"] for entry in summary["per_seed"]] == [3, 4]
    assert summary["per_seed"][1]["versus_base"] == {"difference": 0.1}
    assert summary["accuracy"]["values"] == [0.2, 0.3] and summary["agreement"] is None
    json.dumps(summary)  # metrics.json holds it as it is


def test_the_spec_takes_seeds_in_its_eval_section_and_the_cli_flag_sets_it():
    assert parse_spec({"model": "smollm2-135m"}).eval.seeds == 1
    assert parse_spec({"model": "smollm2-135m", "eval": {"seeds": 3}}).eval.seeds == 3
    with pytest.raises(SpecError, match=r"eval.seeds: .*greater than or equal to 1"):
        parse_spec({"model": "smollm2-135m", "eval": {"seeds": 0}})
    with pytest.raises(SpecError, match="eval.seeds=2 with train.data"):
        parse_spec({"model": "smollm2-135m", "eval": {"seeds": 2}, "train": {"data": [{"out": "runs/a"}]}})
    for command in ("run", "train", "eval"):
        assert parse_args([command, "job.yaml", "--seeds", "3", "out=x"]).overrides == ["out=x", "eval.seeds=3"]
    assert parse_args(["eval", "job.yaml"]).overrides == []


def _adapter(folder, rank=16):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return str(folder.resolve())


def test_every_seeds_adapter_runs_on_the_one_engine_and_a_merged_seed_gets_its_own(tmp_path):
    spec = parse_spec({"model": "smollm2-135m", "method": {"name": "cot"}, "eval": {"seeds": 3}})
    base = _adapter(tmp_path / "model")
    seeds = [(1, _adapter(tmp_path / "model-seed1"), None), (2, _adapter(tmp_path / "model-seed2"), None)]
    assert seed_models(spec, tmp_path) == seeds
    (plan,) = replica_plans(spec, base, None, DIRECT, SAMPLED, seeds)
    assert plan.lora_rank == 16
    assert [(run.kind, run.adapter) for run in plan.runs] == [
        ("system1", None),
        ("system2", None),
        ("distilled", base),
        ("distilled_seed1", seeds[0][1]),
        ("distilled_seed2", seeds[1][1]),
    ]
    merged = [(1, None, str(tmp_path / "m1")), (2, None, str(tmp_path / "m2"))]
    plans = replica_plans(spec, None, str(tmp_path / "m0"), DIRECT, SAMPLED, merged)
    assert [(plan.model, [run.kind for run in plan.runs]) for plan in plans] == [
        ("smollm2-135m", ["system1", "system2"]),
        (str(tmp_path / "m0"), ["distilled"]),
        (str(tmp_path / "m1"), ["distilled_seed1"]),
        (str(tmp_path / "m2"), ["distilled_seed2"]),
    ]


def test_a_seed_never_trained_is_one_line_naming_it(tmp_path):
    spec = parse_spec({"model": "smollm2-135m", "eval": {"seeds": 3}})
    _adapter(tmp_path / "model-seed1")
    with pytest.raises(FileNotFoundError, match=r"^eval.seeds=3: seed 2 has no model .*run `s2d train`"):
        seed_models(spec, tmp_path)
    assert seed_models(parse_spec({"model": "smollm2-135m"}), tmp_path) == []  # one seed: nothing looked for


def _letters(*answers):
    return [Chain({"final": f"The last letter is {answer}."}, 5) for answer in answers]


def _evaluated(seeds: int) -> dict:
    """_metrics over made-up chains: 40 inputs whose label is e; base right on 4, System 2's vote on 20; seed 0
    right on 20 inputs, seed 1 on 12, seed 2 on 30."""
    spec = parse_spec(
        {"model": "smollm2-135m", "task": {"name": "last_letter_one"}, "method": {"name": "cot_fewshot"}}
        | {"sampling": {"n": 3}, "curate": {"threshold": 0.5}, "eval": {"seeds": seeds}}
    )
    inputs = [TaskInput(str(i), "q", "e") for i in range(40)]
    right = {"system1": 4, "distilled": 20, "distilled_seed1": 12, "distilled_seed2": 30}
    chains = {kind: [_letters("e" if i < count else "a") for i in range(40)] for kind, count in right.items()}
    chains["system2"] = [_letters("e", "e", "a") if i < 20 else _letters("a", "a", "e") for i in range(40)]
    kinds = ["system1", "system2", "distilled"] + [f"distilled_seed{seed}" for seed in range(1, seeds)]
    dirs = {seed: f"/o/{model_folder(seed)}" for seed in range(seeds)}
    return _metrics(spec, inputs, 3, dirs, "Distilled", chains, {kind: 0.1 for kind in kinds}, 1.0)


def test_metrics_carry_each_seed_and_the_spread_and_the_rows_stay_seed_zeros():
    one, three = _evaluated(1), _evaluated(3)
    assert "seeds" not in one  # one seed: metrics.json as before
    assert three["systems"] == one["systems"] and three["comparisons"] == one["comparisons"]
    seeds = three["seeds"]
    assert seeds["count"] == 3 and [entry["seed"] for entry in seeds["per_seed"]] == [0, 1, 2]
    assert [entry["accuracy"] for entry in seeds["per_seed"]] == [0.5, 0.3, 0.75]
    assert [entry["model_dir"] for entry in seeds["per_seed"]] == ["/o/model", "/o/model-seed1", "/o/model-seed2"]
    assert (seeds["accuracy"]["low"], seeds["accuracy"]["high"]) == (0.3, 0.75)
    assert seeds["accuracy"]["mean"] == pytest.approx(1.55 / 3)
    # agreement with System 2's vote (e on inputs 0-19, a on 20-39): seed 1 agrees on 12 + 20, seed 2 on 20 + 10
    assert [entry["agreement"] for entry in seeds["per_seed"]] == [1.0, 0.8, 0.75]
    base = seeds["per_seed"][2]["versus_base"]  # paired with the base System 1 on the same 40 inputs
    assert base["difference"] == pytest.approx(26 / 40) and base["p_value"] < 1e-6
    distilled = next(score for score in three["systems"] if score["kind"] == "distilled")
    assert distilled["accuracy"] == seeds["per_seed"][0]["accuracy"]
    json.dumps(three)


def test_the_report_shows_the_seeds_and_their_spread_and_one_seed_reads_as_before(tmp_path):
    three = _evaluated(3) | {"run": "runs/x"}
    report = render_report(three)
    assert "Seeds (eval.seeds): the distillation trained 3 times" in report
    assert "| 1 | 1 | 30.0% [" in report and "**51.7% (30.0-75.0%, 3 seeds)**" in report
    assert "**85.0% (75.0-100.0%, 3 seeds)**" in report  # agreement
    assert report.index("Seeds (eval.seeds)") < report.index("Paired comparisons")
    one = _evaluated(1) | {"run": "runs/x"}
    assert "seed" not in render_report(one).lower()
    assert seeds_table([one], with_run=False) == []
    assert seeds_table([three], with_run=True)[-1].startswith("| runs/x | **spread: mean (min-max)** |")
    png = plot_runs([three], tmp_path / "report.png")
    assert png.stat().st_size > 10_000


def _paper():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "scripts" / "paper.py"
    spec = importlib.util.spec_from_file_location("paper_for_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_papers_demo_row_runs_three_seeds_and_its_table_shows_the_spread(tmp_path, monkeypatch):
    paper = _paper()
    monkeypatch.setattr(paper, "RUNS", tmp_path)
    commands = []
    monkeypatch.setattr(paper.subprocess, "call", lambda command, **_: commands.append(command) or 0)
    paper.run_pairing("demo", "configs/demo.yaml")
    paper.run_pairing("rar1_coin_flip", "configs/rar1_coin_flip.yaml")
    assert commands[0][-2:] == ["--seeds", "3"] and "--seeds" not in commands[1]
    (tmp_path / "demo" / "eval").mkdir(parents=True)
    (tmp_path / "demo" / "eval" / "metrics.json").write_text(json.dumps(_evaluated(3)))
    rows = [paper.collect("demo", "configs/demo.yaml", "the demo", None, {"exit": 0, "seconds": 600})]
    demo = next(line for line in paper.render(rows, "| probe |", 600).splitlines() if line.startswith("| demo |"))
    assert "| 50% [35%, 65%]; 3 seeds: 52% (30-75%) |" in demo
    assert "→ 100% [91%, 100%]; 3 seeds: 85% (75-100%) |" in demo
