"""A mixture (train.data): two small s2d outputs, a last-letter one and a coin-flip one, trained once into one student
on their weighted, deduplicated union, then evaluated on each source's own held-out inputs, on real Ray Train +
DeepSpeed and vLLM (CPU).

The outputs are committed as generate commits them (ShardWriter + manifest + job.yaml), with the tiny model built
from a config (tiny_student.py) as their model: every engine start and training step is the tiny one's, and both
sources are evaluated on one engine. One `run_job` (module fixture) serves every assertion.
"""

from __future__ import annotations

import json

import pytest
from tiny_student import build_tiny_student
from training_data import last_letter_rows

import s2d
from s2d.engine.core.spec import parse_spec
from s2d.engine.data.ownership import write_job_file
from s2d.engine.data.shards import ShardWriter, curated_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # 76 s on 2 cores: over the default tier's 60 s

COIN_FLIPS = [
    ("A coin is heads up. Ana flips the coin. Ben does not flip the coin. Is the coin still heads up?", "no"),
    ("A coin is heads up. Cy flips the coin. Dee flips the coin. Is the coin still heads up?", "yes"),
    ("A coin is heads up. Eve does not flip the coin. Flo does not flip the coin. Is the coin still heads up?", "yes"),
    ("A coin is heads up. Gil flips the coin. Is the coin still heads up?", "no"),
    ("A coin is heads up. Hal does not flip the coin. Ida flips the coin. Is the coin still heads up?", "no"),
    ("A coin is heads up. Jo flips the coin. Kim flips the coin. Lu flips the coin. Is the coin still heads up?", "no"),
]


def commit_source(out, model: str, task: str, pairs: list[tuple[str, str, str]]) -> None:
    """An output of `task` whose accepted pairs are (input_id, prompt, answer), with its job.yaml, as generate leaves
    it."""
    rows = [
        {"input_id": input_id, "shard_id": index % 2, "status": "accepted", "prompt": prompt, "answer": answer}
        for index, (input_id, prompt, answer) in enumerate(pairs)
    ]
    expected = {shard: sum(row["shard_id"] == shard for row in rows) for shard in range(2)}
    writer = ShardWriter.open(out, 2, f"fingerprint-{task}", expected)
    writer.add(curated_table([row | {"votes": 2, "num_samples": 2} for row in rows]))
    writer.finish()
    job = {"model": model, "out": str(out), "task": {"name": task, "num_inputs": 16}, "method": {"name": "cot"}}
    # its own held-out set: 4 inputs, which the mixture's eval uses for this source
    write_job_file(
        parse_spec(job | {"sampling": {"n": 2, "max_tokens": 16}, "eval": {"num_inputs": 4, "max_tokens": 8}})
    )


@pytest.fixture(scope="module")
def mixture_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    model = str(build_tiny_student(root / "tiny"))
    letters = [(f"ll{index}", row["prompt"], row["answer"]) for index, row in enumerate(last_letter_rows(8))]
    flips = [(f"cf{index}", prompt, answer) for index, (prompt, answer) in enumerate(COIN_FLIPS)]
    commit_source(root / "letters", model, "last_letter", letters)
    # ll0 again: a copy of an input the first source already gives, dropped (the first source listed wins)
    commit_source(root / "flips", model, "coin_flip", [*flips, ("ll0", "a different prompt for ll0", "no")])
    spec = parse_spec(
        {
            "model": model,
            "out": str(root / "mix"),
            "train": {
                "data": [{"out": str(root / "letters"), "weight": 1}, {"out": str(root / "flips"), "weight": 2}],
                "num_workers": 1,
                "micro_batch_size": 4,
                "epochs": 1,
                "checkpoint_every_steps": 0,
            },
        }
    )
    # every stage, as `s2d run` asks: the job's own out is not a source, so generate is skipped
    return root, spec, s2d.run_job(spec, progress=False)


def test_the_student_trains_once_on_the_weighted_deduplicated_union(mixture_run):
    root, spec, result = mixture_run
    assert result.generate is None and not (root / "mix" / "shards").exists()
    metrics = result.train.metrics
    # 8 letters x 1 + 6 coin flips x 2 (their copy of ll0 dropped): 20 examples, 5 steps of 4, one run
    assert result.train.examples == 20 and result.train.steps == 5
    assert [(s["task"], s["accepted"], s["duplicates"], s["weight"], s["examples"]) for s in metrics["mixture"]] == [
        ("last_letter", 8, 0, 1.0, 8),
        ("coin_flip", 7, 1, 2.0, 12),
    ]
    model_dir = root / "mix" / "model"
    assert (model_dir / "adapter_config.json").is_file()
    assert json.loads((model_dir / "train_metrics.json").read_text())["mixture"] == metrics["mixture"]
    card = (model_dir / "README.md").read_text()
    for source, task in (("letters", "last_letter"), ("flips", "coin_flip")):
        assert f"| `{root / source}` | `fingerprint-{task}` | {task} |" in card
    assert not (root / "letters" / "model").exists() and not (root / "flips" / "model").exists()  # read, never written


def test_eval_reports_the_one_student_on_each_sources_own_held_out_inputs(mixture_run):
    root, spec, result = mixture_run
    metrics = result.eval.metrics
    sources = metrics["sources"]
    assert [(run["run"], run["task"]) for run in sources] == [
        (str(root / "letters"), "last_letter"),
        (str(root / "flips"), "coin_flip"),
    ]
    for run in sources:
        assert run["distilled_model"] == str((root / "mix" / "model").resolve())
        assert {score["total"] for score in run["systems"]} == {4}
        assert [score["kind"] for score in run["systems"]] == ["system1", "system2", "system2", "distilled"]
        versus = {(comparison["measure"], comparison["versus_kind"]) for comparison in run["comparisons"]}
        assert ("accuracy", "system1") in versus  # distilled vs the student's base, paired
    assert [run["source"]["examples"] for run in sources] == [8, 12]
    # one teacher, one student: both sources ran on one engine, started once (counted under the first)
    assert sources[0]["engine_start_s"] > 0 and sources[1]["engine_start_s"] == 0
    assert len(result.eval.systems) == 8 and {score["source"] for score in result.eval.systems} == {
        str(root / "letters"),
        str(root / "flips"),
    }
    report = (root / "mix" / "eval" / "report.md").read_text()
    assert "a mixture of 2 sources" in report
    assert f"## Source 1: {root / 'letters'}" in report and f"## Source 2: {root / 'flips'}" in report
    assert "### s2d evaluation: coin_flip / cot" in report
