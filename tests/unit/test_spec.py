from pathlib import Path

import pytest

from s2d.engine.core.spec import JobSpec, SpecError, load_spec, parse_spec

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path):
    spec = load_spec(path)
    assert isinstance(spec, JobSpec)


def test_demo_has_the_documented_keys():
    spec = load_spec(Path(__file__).parents[2] / "configs" / "demo.yaml")
    assert spec.model == "smollm2-135m" and spec.out == "runs/demo"
    assert (spec.task.name, spec.task.num_inputs, spec.task.seed) == ("last_letter_one", 288, 0)
    assert spec.method.name == "cot_fewshot"
    assert (spec.sampling.n, spec.sampling.seed) == (8, 0)
    assert (spec.curate.rule, spec.curate.threshold) == ("majority", 0.3)
    assert (spec.train.deepspeed, spec.train.lora.r, spec.train.epochs) == ("zero2", 16, 3)
    assert spec.eval.num_inputs == 200 and spec.eval.system2_samples is None  # System 2 sampled n times


def test_dotted_overrides_are_parsed_as_yaml():
    spec = parse_spec(
        {"model": "smollm2-135m"},
        [
            "task.num_inputs=8",
            "sampling.n=4",
            "out=runs/try",
            "train.lora.target_modules=[q_proj, k_proj]",
            "sampling.temperature=0.5",
        ],
    )
    assert spec.task.num_inputs == 8 and spec.sampling.n == 4 and spec.out == "runs/try"
    assert spec.train.lora.target_modules == ["q_proj", "k_proj"] and spec.sampling.temperature == 0.5


@pytest.mark.parametrize(
    "data, overrides, message",
    [
        ({"model": "m", "tsk": {}}, [], "unknown key 'tsk'"),
        ({"model": "m", "task": {"nme": "x"}}, [], "unknown key 'task.nme'"),
        ({"model": "m"}, ["sampling.n=many"], "sampling.n"),
        ({"model": "m"}, ["sampling.n=0"], "sampling.n"),
        ({}, [], "missing required key 'model'"),
        ({"model": "m"}, ["task.name=nope"], "unknown task 'nope'"),
        ({"model": "m"}, ["method.name=nope"], "unknown method 'nope'"),
        ({"model": "m"}, ["curate.threshold=1.5"], "curate.threshold"),
        ({"model": "m"}, ["novalue"], "key=value"),
        ({"model": "m"}, ["model.x=1"], "not a section"),
    ],
)
def test_bad_specs_raise_one_line_errors(data, overrides, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(data, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_and_non_mapping_job_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read job file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
