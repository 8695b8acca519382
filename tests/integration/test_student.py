"""A student of its own: the packaged SmolLM2 teaches, a tiny Llama built from a config (its own byte-level BPE
tokenizer and chat template, a few hundred tokens against the teacher's 49,152) learns, through `s2d train` and
`s2d eval` on real Ray Train + DeepSpeed and vLLM (CPU).

The teacher's accepted pairs are committed as text (training_data.py, as generate commits them), so the test needs no
generate stage; one train + eval run (module fixture) serves every assertion.
"""

from __future__ import annotations

import json

import pytest
from tiny_student import VOCAB_SIZE, build_tiny_student
from training_data import commit_shards, last_letter_rows

import s2d
from s2d.engine.core.spec import parse_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def student_run(ray_session, packaged_model_dir, tmp_path_factory):
    student = build_tiny_student(tmp_path_factory.mktemp("tiny") / "student")
    out = tmp_path_factory.mktemp("student") / "run"
    commit_shards(out, last_letter_rows(16))
    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "out": str(out),
            "task": {"name": "last_letter", "num_inputs": 16},
            "method": {"name": "cot"},
            "sampling": {"n": 2, "max_tokens": 16},
            "train": {
                "model": str(student),
                "num_workers": 1,
                "micro_batch_size": 4,
                "epochs": 1,
                "checkpoint_every_steps": 0,
            },
            "eval": {"num_inputs": 4, "max_tokens": 8},
        }
    )
    result = s2d.run_job(spec, stages=("train", "eval"), progress=False)
    return spec, student, result


def test_the_student_is_the_model_trained_with_its_own_tokenizer(student_run):
    spec, student, result = student_run
    from transformers import AutoTokenizer

    model_dir = spec.out_path / "model"
    metrics = result.train.metrics
    assert (metrics["student"], metrics["teacher"]) == (str(student), "smollm2-135m")
    assert result.train.examples == 16 and result.train.steps == 4  # the teacher's 16 pairs, as text
    adapter = json.loads((model_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(student.resolve())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))  # saved with the adapter: the student's own
    assert (
        len(tokenizer) == VOCAB_SIZE and tokenizer.chat_template == AutoTokenizer.from_pretrained(student).chat_template
    )


def test_eval_reports_the_distilled_student_beside_its_base_and_the_teachers_systems(student_run):
    spec, student, result = student_run
    metrics = result.eval.metrics
    assert (metrics["model"], metrics["student"]) == ("smollm2-135m", str(student))
    systems = [(score["system"], score["kind"]) for score in metrics["systems"]]
    assert systems == [
        ("System 1 (teacher, direct)", "teacher_system1"),
        ("System 2 (teacher, cot, single sample, mean of 2)", "system2"),
        ("System 2 (teacher, cot, majority of 2)", "system2"),
        ("System 1 (student base, direct)", "system1"),
        ("Distilled System 1 (student + LoRA, direct)", "distilled"),
    ]
    # The adapter's shapes are the tiny student's (hidden size 64, not the teacher's 576): vLLM served it, so the
    # distilled answers came from the student's engine.
    assert metrics["distilled_model"] == str((spec.out_path / "model").resolve())
    assert {score["total"] for score in metrics["systems"]} == {4}
    versus = {(comparison["measure"], comparison["versus"]) for comparison in metrics["comparisons"]}
    assert ("accuracy", "System 1 (student base, direct)") in versus
    assert ("accuracy", "System 2 (teacher, cot, majority of 2)") in versus
    assert not any("teacher, direct" in name for _, name in versus)
    report = (spec.out_path / "eval" / "report.md").read_text()
    assert f"/ smollm2-135m -> {student}" in report and "| System 1 (student base, direct) |" in report
