"""The evaluation report: the table with its intervals and paired comparisons, the PNG chart, `s2d report`, and
what eval serves as distilled. The statistics themselves: test_stats.py."""

from __future__ import annotations

import json

import pytest

from s2d.engine.cli import main
from s2d.engine.core.spec import parse_spec
from s2d.engine.core.stats import wilson_interval
from s2d.engine.stages.eval_metrics import normalised_systems
from s2d.engine.stages.eval_systems import adapter_rank, distilled_model
from s2d.engine.stages.report import render_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(accuracies=(0.25, 0.5, 0.4375), tokens=(10.0, 43.0, 9.5), with_new_fields=True):
    kinds = ("system1", "system2", "distilled")
    names = (
        "System 1 (base model, direct)",
        "System 2 (rar2, single sample)",
        "Distilled System 1 (base + LoRA, direct)",
    )
    systems = []
    for kind, name, accuracy, tokens_per_answer in zip(kinds, names, accuracies, tokens):
        score = {
            "system": name,
            "accuracy": accuracy,
            "correct": accuracy * 32,
            "total": 32,
            "tokens_per_answer": tokens_per_answer,
        }
        if with_new_fields:
            low, high = wilson_interval(accuracy * 32, 32)
            score |= {"kind": kind, "samples": 32, "ci_low": low, "ci_high": high, "latency_s": 0.1}
        systems.append(score)
    return {
        "task": "last_letter",
        "method": "rar2",
        "model": "smollm2-135m",
        "eval_inputs": 32,
        "seconds_per_input": {"system1": 0.29, "system2": 0.92, "distilled": 0.78},
        "systems": systems,
    }


def write_run(out, data):
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "metrics.json").write_text(json.dumps(data))
    return out


COMPARISONS = [
    {
        "measure": "accuracy",
        "system": "Distilled System 1 (base + LoRA, direct)",
        "versus": "System 1 (base model, direct)",
        "versus_kind": "system1",
        "inputs": 32,
        "both": 6,
        "first_only": 8,
        "second_only": 2,
        "neither": 16,
        "difference": 0.1875,
        "low": 0.0123,
        "high": 0.3456,
        "p_value": 0.109375,
    },
    {
        "measure": "agreement",
        "system": "Distilled System 1 (base + LoRA, direct)",
        "versus": "System 1 (base model, direct)",
        "versus_kind": "system1",
        "inputs": 20,
        "both": 5,
        "first_only": 12,
        "second_only": 0,
        "neither": 3,
        "difference": 0.6,
        "low": 0.35,
        "high": 0.77,
        "p_value": 0.00048828125,
    },
]


def test_old_metrics_files_get_kind_interval_and_latency():
    systems = normalised_systems(metrics(with_new_fields=False))
    assert [s["kind"] for s in systems] == ["system1", "system2", "distilled"]
    assert [s["latency_s"] for s in systems] == [0.29, 0.92, 0.78]
    assert systems[1]["ci_low"] == pytest.approx(wilson_interval(16, 32)[0])


def test_report_table_has_interval_tokens_latency_and_the_chart():
    text = render_report(metrics())
    # metrics written before agreement existed show n/a there
    assert "| System 2 (rar2, single sample) | 50.0% [33.6%, 66.4%] | 16 / 32 | n/a | 43.0 | 100 ms |" in text
    assert "batched" in text and "![accuracy vs tokens per answer](report.png)" in text


def test_report_has_the_paired_comparisons_with_mcnemar():
    assert "McNemar" not in render_report(metrics())  # metrics written before the comparisons: no table
    text = render_report(metrics() | {"comparisons": COMPARISONS})
    assert "Newcombe" in text and "input as the unit" in text
    assert (
        "| accuracy | Distilled System 1 (base + LoRA, direct) | System 1 (base model, direct) | 32 "
        "| +18.8 pts [+1.2, +34.6] | 8 / 2 | 0.109 |"
    ) in text
    assert "| agreement | Distilled System 1 (base + LoRA, direct) | System 1 (base model, direct) | 20 " in text
    assert "| +60.0 pts [+35.0, +77.0] | 12 / 0 | 4.9e-04 |" in text


def test_one_run_renders_into_its_eval_folder(tmp_path):
    out = write_run(tmp_path / "run", metrics())
    report, chart = write_report([out])
    assert report == out / "eval" / "report.md" and chart == out / "eval" / "report.png"
    assert chart.read_bytes()[:8] == PNG_MAGIC and chart.stat().st_size > 10_000


def test_several_runs_share_one_table_and_chart(tmp_path):
    first = write_run(tmp_path / "a", metrics())
    second = write_run(
        tmp_path / "b", metrics(accuracies=(0.1, 0.9, 0.8), tokens=(10.0, 400.0, 9.0)) | {"comparisons": COMPARISONS}
    )
    with pytest.raises(ValueError, match="--to"):
        write_report([first, second])
    report, chart = write_report([first, second], tmp_path / "compare")
    text = report.read_text()
    assert text.count("| last_letter | rar2 |") == 6 and str(first) in text and str(second) in text
    assert text.count(f"| {second} | accuracy |") == 1 and f"| {first} | accuracy |" not in text
    assert chart.read_bytes()[:8] == PNG_MAGIC


def test_cli_report(tmp_path, capsys):
    out = write_run(tmp_path / "run", metrics())
    assert main(["report", str(out)]) == 0
    assert "accuracy [95% CI]" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run `s2d eval` on that job first" in capsys.readouterr().err
    (out / "eval" / "metrics.json").write_text("{broken")
    assert main(["report", str(out)]) == 2


def test_distilled_model_is_the_adapter_the_merged_copy_or_the_full_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    spec = parse_spec({"model": "m", "out": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="run `s2d train`"):
        distilled_model(spec, model)
    (model / "adapter_config.json").write_text(json.dumps({"r": 12}))
    adapter, other, name = distilled_model(spec, model)
    assert adapter == str(model.resolve()) and other is None and "LoRA" in name
    assert adapter_rank(adapter) == 16  # vLLM accepts only some max_lora_rank values
    merged_spec = parse_spec({"model": "m", "out": str(tmp_path), "eval": {"distilled": "merged"}})
    with pytest.raises(FileNotFoundError, match="train.merge=true"):
        distilled_model(merged_spec, model)
    (model / "merged").mkdir()
    (model / "merged" / "config.json").write_text("{}")
    assert distilled_model(merged_spec, model)[:2] == (None, str((model / "merged").resolve()))
    (model / "adapter_config.json").unlink()
    (model / "config.json").write_text("{}")
    assert distilled_model(spec, model)[:2] == (None, str(model.resolve()))


def test_a_report_goes_only_where_it_may_and_is_rewritten_whole(tmp_path, capsys):
    """`s2d report --to DIR` writes into a new or empty folder or one it wrote a report to; a user's folder is
    refused with one line and left as it was. No temporary name is left behind."""
    out = write_run(tmp_path / "run", metrics())
    users = tmp_path / "notes"
    users.mkdir()
    (users / "report.md").write_text("my own notes")
    assert main(["report", str(out), "--to", str(users)]) == 1
    assert "no report of s2d's" in capsys.readouterr().err
    assert [p.name for p in users.iterdir()] == ["report.md"] and (users / "report.md").read_text() == "my own notes"
    assert main(["report", str(out), "--to", str(users / "report.md")]) == 1
    assert "is a file" in capsys.readouterr().err

    compare = tmp_path / "compare"
    for _ in range(2):  # the second run rewrites the report s2d wrote there
        assert main(["report", str(out), "--to", str(compare)]) == 0
    assert sorted(p.name for p in compare.iterdir()) == [".s2d-report.json", "report.md", "report.png"]
    write_report([out])
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["metrics.json", "report.md", "report.png"]
