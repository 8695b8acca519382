"""scripts/paper.py (`make paper`): every pairing's job file loads, and the table reads the runs' metrics."""

import importlib.util
import json
from pathlib import Path

import pytest

from s2d.engine.core.spec import load_spec

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("paper", ROOT / "scripts" / "paper.py")
paper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper)


@pytest.mark.parametrize("name, job", [(name, job) for name, job, *_ in paper.PAIRINGS])
def test_every_pairing_is_a_valid_job_file(name, job):
    assert load_spec(ROOT / job).eval.num_inputs >= 12, name  # fewer held-out inputs say nothing


def _score(system, kind, accuracy, agreement=None):
    fields = (
        {"agreement": agreement, "agreement_low": agreement - 0.1, "agreement_high": agreement + 0.1}
        if agreement is not None
        else {}
    )
    return {
        "system": system,
        "kind": kind,
        "accuracy": accuracy,
        "ci_low": accuracy - 0.05,
        "ci_high": accuracy + 0.05,
        "tokens_per_answer": 3.0,
        **fields,
    }


def test_the_table_has_a_row_per_pairing_and_says_which_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "RUNS", tmp_path)
    out = tmp_path / "demo"
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "metrics.json").write_text(
        json.dumps(
            {
                "eval_inputs": 300,
                "systems": [
                    _score("System 1", "system1", 0.1, 0.2),
                    _score("System 2 (x, single sample, mean of 8)", "system2", 0.2, 0.5),
                    _score("System 2 (x, majority of 8)", "system2", 0.3),
                    _score("Distilled", "distilled", 0.25, 0.6),
                ],
            }
        )
    )
    (out / "metrics.json").write_text(json.dumps({"committed_accepted": 120, "total_inputs": 400}))
    (tmp_path / "bsm_pairwise_judge").mkdir()
    (tmp_path / "bsm_pairwise_judge" / "metrics.json").write_text(
        json.dumps({"committed_accepted": 0, "total_inputs": 36, "rejected_by_reason": {"variant_no_answer": 36}})
    )
    runs = {
        "demo": {"exit": 0, "seconds": 480},
        "cot_arithmetic": {"exit": 1, "seconds": 20},
        "bsm_pairwise_judge": {"exit": 1, "seconds": 230},
    }
    rows = [
        paper.collect(name, job, experiment, numbers, runs.get(name))
        for name, job, experiment, numbers in paper.PAIRINGS
    ]
    table = paper.render(rows, "| probe |", 3000)
    demo = next(line for line in table.splitlines() if line.startswith("| demo |"))
    assert "| 300 | 120 / 400 | 10% [5%, 15%] | 20% [15%, 25%] | 30% [25%, 35%] | 25% [20%, 30%] |" in demo
    assert "20% [10%, 30%] → 60% [50%, 70%]" in demo and "8.0 min" in demo
    assert "| cot_arithmetic | failed, see runs/paper/cot_arithmetic.log |" in table
    assert "| bsm_pairwise_judge | nothing to distil: 0 of 36 inputs passed the vote (variant_no_answer 36);" in table
    assert "| rar1_last_letter | not run |" in table and table.rstrip().endswith("| probe |")


def test_regenerating_keeps_the_hand_written_text_around_the_markers(tmp_path, monkeypatch):
    results = tmp_path / "results.md"
    monkeypatch.setattr(paper, "RESULTS", results)
    results.write_text(f"# Results\n\nintro\n\n{paper.BEGIN}\nold\n{paper.END}\n\n## What was tried\nnotes\n")
    paper.write_results("new table\n")
    assert (
        results.read_text()
        == f"# Results\n\nintro\n\n{paper.BEGIN}\nnew table\n{paper.END}\n\n## What was tried\nnotes\n"
    )


@pytest.mark.parametrize("accepted, outcome", [(0, "nothing to distil"), (5, "failed (exit 1)")])
def test_a_job_whose_vote_passed_nothing_is_a_result_not_a_failure(tmp_path, monkeypatch, capsys, accepted, outcome):
    monkeypatch.setattr(paper, "RUNS", tmp_path)

    def job_stopping_before_training(command, **_):
        (tmp_path / "bsm").mkdir()
        (tmp_path / "bsm" / "metrics.json").write_text(json.dumps({"committed_accepted": accepted}))
        return 1

    monkeypatch.setattr(paper.subprocess, "call", job_stopping_before_training)
    run = paper.run_pairing("bsm", "configs/bsm_pairwise_judge.yaml")
    assert run["nothing_to_distil"] is (accepted == 0)
    assert f"paper: bsm: {outcome}" in capsys.readouterr().out
