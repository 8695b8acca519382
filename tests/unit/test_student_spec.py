"""A student of its own (train.model): the spec, its early check, what eval runs where, the report and the card."""

from __future__ import annotations

import datetime

import pytest
from report_rows import system_row

from s2d.engine.cli import main
from s2d.engine.core.program import Chain, SamplingRequest
from s2d.engine.core.scoring import (
    TEACHER_SYSTEM1,
    agreement_outcomes,
    paired_comparisons,
    score_single,
    single_outcomes,
)
from s2d.engine.core.spec import parse_spec
from s2d.engine.core.tasks import TaskInput
from s2d.engine.data.fingerprint import generation_fingerprint
from s2d.engine.data.lease import LEASE
from s2d.engine.data.models import ModelNotFound
from s2d.engine.data.shards import ShardWriter, curated_table
from s2d.engine.stages.api import run_job
from s2d.engine.stages.chart import plot_runs
from s2d.engine.stages.eval_metrics import model_label
from s2d.engine.stages.eval_systems import distilled_model, replica_plans, system_names
from s2d.engine.stages.report import render_report

DIRECT = SamplingRequest(n=1, temperature=0.0, max_tokens=8)
SAMPLED = SamplingRequest(n=4, temperature=0.7, max_tokens=8)


def student_folder(tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def test_the_student_defaults_to_the_jobs_model_and_is_not_part_of_generates_fingerprint(tmp_path):
    teacher = parse_spec({"model": "smollm2-135m"})
    assert teacher.train.model is None and teacher.student == "smollm2-135m" and not teacher.has_student
    student = parse_spec({"model": "smollm2-135m", "train": {"model": student_folder(tmp_path)}})
    assert student.has_student and student.student == student.train.model
    assert not parse_spec({"model": "smollm2-135m", "train": {"model": "smollm2-135m"}}).has_student
    # what the teacher generates does not depend on who learns from it: its shards resume under any student
    assert generation_fingerprint(student) == generation_fingerprint(teacher)
    assert "smaller student serves cheaper" in type(teacher.train).model_fields["model"].description


def unfinished_output(out, train_model: str):
    writer = ShardWriter.open(out, 2, "fp", {0: 1, 1: 1})
    row = {"input_id": "a", "shard_id": 0, "status": "rejected", "prompt": "q", "answer": None, "num_samples": 2}
    writer.add(curated_table([row]))
    return parse_spec({"model": "smollm2-135m", "out": str(out), "train": {"model": train_model}})


@pytest.mark.parametrize("stages", [("train",), ("eval",), ("generate", "train", "eval")])
def test_a_missing_student_fails_in_one_line_before_anything_runs(tmp_path, stages):
    spec = unfinished_output(tmp_path / "run", str(tmp_path / "no-such-student"))
    with pytest.raises(ModelNotFound) as refused:
        run_job(spec, stages, progress=False)
    line = str(refused.value)
    assert "\n" not in line and line.startswith("train.model (the student): model ") and "not found" in line
    assert not (tmp_path / "run" / LEASE).exists() and not (tmp_path / "run" / "job.yaml").exists()


def test_the_cli_says_the_missing_student_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    unfinished_output(out, "smollm2-135m")
    job = tmp_path / "job.yaml"
    job.write_text(f"model: smollm2-135m\nout: {out}\ntrain: {{model: {tmp_path / 'gone'}}}\n")
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    assert main(["train", str(job), "-v"]) == 2  # as for a job `model` that cannot load: before any log
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("s2d: error: train.model (the student): model ")
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before


def test_eval_runs_the_teacher_and_the_student_each_on_its_own_replica(tmp_path):
    adapter = tmp_path / "model"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    folder = student_folder(tmp_path)
    spec = parse_spec({"model": "smollm2-135m", "method": {"name": "cot"}, "train": {"model": folder}})
    path, other, name = distilled_model(spec, adapter)
    assert other is None and name == "Distilled System 1 (student + LoRA, direct)"
    teacher, student = replica_plans(spec, path, None, DIRECT, SAMPLED)
    assert (teacher.model, teacher.lora_rank, [run.kind for run in teacher.runs]) == (
        "smollm2-135m",
        None,
        [TEACHER_SYSTEM1, "system2"],
    )
    assert (student.model, student.lora_rank) == (folder, 16)
    assert [(run.kind, run.adapter) for run in student.runs] == [("system1", None), ("distilled", path)]
    names = system_names(spec, 4, name)
    assert list(names) == [TEACHER_SYSTEM1, "system2", "system2_majority", "system1", "distilled"]
    assert (
        names["system1"] == "System 1 (student base, direct)"
        and "teacher, cot, majority of 4" in names["system2_majority"]
    )
    # a full fine-tune of the student: its base on one replica, the fine-tuned model on another
    plans = replica_plans(spec, None, str(tmp_path / "full"), DIRECT, SAMPLED)
    assert [plan.model for plan in plans] == ["smollm2-135m", folder, str(tmp_path / "full")]
    assert [run.kind for run in plans[1].runs] == ["system1"]


def test_without_a_student_eval_is_as_before():
    spec = parse_spec({"model": "smollm2-135m", "method": {"name": "cot"}})
    (plan,) = replica_plans(spec, None, None, DIRECT, SAMPLED)
    assert plan.model == "smollm2-135m" and [run.kind for run in plan.runs] == ["system1", "system2"]
    names = system_names(spec, 4, "Distilled System 1 (base + LoRA, direct)")
    assert list(names.values()) == [
        "System 1 (base model, direct)",
        "System 2 (cot, single sample, mean of 4)",
        "System 2 (cot, majority of 4)",
        "Distilled System 1 (base + LoRA, direct)",
    ]


def _letters(*answers):
    return [Chain({"final": f"The last letter is {answer}."}, 5) for answer in answers]


def test_the_distilled_student_is_paired_with_its_own_base_not_with_the_teachers_system1():
    inputs = [TaskInput(str(i), "q", "e") for i in range(10)]
    keys = [item.input_id for item in inputs]
    reference = ["e"] * 10
    systems = []
    for name, kind, right in (("T", TEACHER_SYSTEM1, 9), ("S", "system1", 1), ("D", "distilled", 6)):
        chains = [_letters("e" if i < right else "a") for i in range(10)]
        correct = single_outcomes("last_letter_one", inputs, chains)
        agrees = agreement_outcomes("last_letter_one", chains, reference, keys=keys)
        systems.append((score_single(name, kind, "last_letter_one", inputs, chains), correct, agrees))
    found = {(c["measure"], c["versus"]) for c in paired_comparisons(systems)}
    assert found == {("accuracy", "S"), ("agreement", "S")}


def test_the_report_names_teacher_and_student(tmp_path):
    metrics = {
        "task": "last_letter",
        "method": "cot",
        "model": "smollm2-135m",
        "student": "/models/tiny",
        "eval_inputs": 4,
        "samples_for_system2": 1,
        "run": "runs/s",
        "systems": [
            system_row("System 1 (teacher, direct)", TEACHER_SYSTEM1, 0.5, agreement=0.5),
            system_row("System 2 (teacher, cot, single sample)", "system2", 0.75, agreement=0.5),
            system_row("System 1 (student base, direct)", "system1", 0.0, agreement=0.5),
            system_row("Distilled System 1 (student + LoRA, direct)", "distilled", 0.25, agreement=0.5),
        ],
    }
    report = render_report(metrics)
    assert "# s2d evaluation: last_letter / cot / smollm2-135m -> /models/tiny" in report
    assert "| System 1 (student base, direct) | 0.0%" in report and "| System 1 (teacher, direct) | 50.0%" in report
    assert model_label({"model": "m"}) == "m"
    assert plot_runs([metrics], tmp_path / "report.png").stat().st_size > 0


def test_the_dataset_card_names_the_student(tmp_path):
    from test_card import demo_sized_output

    from s2d.engine.data.manifest import read_manifest
    from s2d.engine.stages.card import card_text

    spec = demo_sized_output(tmp_path / "run")
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    plain = card_text(spec, read_manifest(spec.out_path), {}, when)
    assert "teach the model to answer directly" in plain and "student" not in plain
    student = spec.model_copy(update={"train": spec.train.model_copy(update={"model": "/models/tiny"})})
    card = card_text(student, read_manifest(spec.out_path), {}, when)
    assert "teach the student `/models/tiny` (`train.model`) to answer directly" in card
    assert "- student (the model `s2d train` fine-tunes on these pairs): `/models/tiny`" in card
