"""Mixtures (train.data): the spec's refusals, weights as repetition, dedup across sources, the sources' checks
(one line naming the source, before Ray starts), what `s2d run` runs, the model card and the per-source report."""

from __future__ import annotations

import json

import pytest
from report_rows import system_row

from s2d.engine.core.spec import SpecError, parse_spec
from s2d.engine.data.lease import LEASE
from s2d.engine.data.mixture import (
    SourceError,
    check_sources,
    dedup_by_input_id,
    examples_taken,
    mixture_model_card,
    read_mixture,
    source_eval_spec,
    stages_to_run,
    weighted_rows,
)
from s2d.engine.data.ownership import write_job_file
from s2d.engine.data.shards import ShardWriter, curated_table
from s2d.engine.stages.api import run_job
from s2d.engine.stages.eval_systems import engine_key
from s2d.engine.stages.report import render_mixture_report, write_report


def mixture_spec(out, sources, **train):
    return parse_spec({"model": "smollm2-135m", "out": str(out), "train": {"data": sources, **train}})


def source_output(out, task: str, ids: list[str], committed: set[int] | None = None, shards: int = 2):
    """An s2d output of `task` with one accepted pair per id (its job.yaml too), as generate leaves it."""
    rows = [
        {
            "input_id": input_id,
            "shard_id": index % shards,
            "status": "accepted",
            "prompt": f"{task} question {input_id}",
            "answer": f"{task} answer {input_id}",
            "votes": 2,
            "num_samples": 2,
        }
        for index, input_id in enumerate(ids)
    ]
    expected = {shard: sum(row["shard_id"] == shard for row in rows) for shard in range(shards)}
    writer = ShardWriter.open(out, shards, f"fp-{task}", expected)
    writer.add(curated_table([row for row in rows if committed is None or row["shard_id"] in committed]))
    if committed is None:
        writer.finish()
    write_job_file(parse_spec({"model": "smollm2-135m", "out": str(out), "task": {"name": task}}))
    return out


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"out": "a", "weight": 0}], "train.data.0.weight: a source's weight must be above 0"),
        ([{"out": "a", "weight": -1}], "train.data.0.weight: a source's weight must be above 0"),
        ([{"out": "a", "weight": "nan"}], "train.data.0.weight: Input should be a finite number"),
        ([{"out": "a"}, {"out": "a/"}], "train.data: a is listed twice"),
        ([], "train.data: a mixture needs at least one source"),
        ([{"out": "a", "path": "a"}], "unknown key 'train.data.0.path'"),
    ],
)
def test_a_bad_mixture_is_refused_in_one_line(tmp_path, sources, message):
    with pytest.raises(SpecError) as refused:
        mixture_spec(tmp_path, sources)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_weights_repeat_a_sources_pairs_and_sample_the_rest():
    rows = [{"input_id": str(index)} for index in range(10)]
    assert [examples_taken(10, weight) for weight in (1, 2, 0.5, 2.25, 0.01)] == [10, 20, 5, 23, 1]
    assert examples_taken(0, 3) == 0
    twice_and_a_quarter = weighted_rows(rows, 2.25, seed=0)
    counts = [twice_and_a_quarter.count(row) for row in rows]
    assert len(twice_and_a_quarter) == 23 and sorted(counts) == [2] * 7 + [3] * 3
    assert weighted_rows(rows, 2.25, seed=0) == twice_and_a_quarter  # seeded: the same sample on a rerun
    half = weighted_rows(rows, 0.5, seed=1)
    assert len(half) == 5 and len({row["input_id"] for row in half}) == 5


def test_dedup_keeps_the_first_listed_sources_copy():
    first = [{"input_id": "a", "answer": "1"}, {"input_id": "b", "answer": "1"}]
    second = [{"input_id": "b", "answer": "2"}, {"input_id": "c", "answer": "2"}]
    kept, dropped = dedup_by_input_id([first, second])
    assert kept == [first, [{"input_id": "c", "answer": "2"}]] and dropped == [0, 1]
    kept, dropped = dedup_by_input_id([second, first])  # the order is the priority
    assert kept[0] == second and [row["input_id"] for row in kept[1]] == ["a"] and dropped == [0, 1]


def test_the_mixture_is_the_weighted_deduplicated_union(tmp_path):
    a = source_output(tmp_path / "a", "last_letter", ["x1", "x2", "x3", "x4"])
    b = source_output(tmp_path / "b", "coin_flip", ["y1", "y2", "x4"])  # x4 repeats an input of a
    spec = mixture_spec(tmp_path / "mix", [{"out": str(a)}, {"out": str(b), "weight": 2}])
    mixture = read_mixture(spec)
    assert len(mixture.rows) == 4 + 2 * 2
    assert sum(row["prompt"].startswith("coin_flip") for row in mixture.rows) == 4
    assert not any(row["prompt"] == "coin_flip question x4" for row in mixture.rows)  # a's copy of x4 won
    assert [(s["task"], s["accepted"], s["duplicates"], s["weight"], s["examples"]) for s in mixture.sources] == [
        ("last_letter", 4, 0, 1.0, 4),
        ("coin_flip", 3, 1, 2.0, 4),
    ]
    assert [source["fingerprint"] for source in mixture.sources] == ["fp-last_letter", "fp-coin_flip"]
    assert read_mixture(spec).rows == mixture.rows  # shuffled by train.seed: the same order on a rerun
    card = mixture_model_card(spec, {"mixture": mixture.sources, "rows": 8, "steps": 4})
    assert f"| `{a}` | `fp-last_letter` | last_letter |" in card and "| 1 | 2 | 4 |" in card


def test_each_unusable_source_fails_in_one_line_naming_it(tmp_path):
    good = source_output(tmp_path / "good", "last_letter", ["x1", "x2"])
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    no_job = source_output(tmp_path / "no-job", "last_letter", ["x1"])
    (no_job / "job.yaml").unlink()
    bad_manifest = source_output(tmp_path / "bad-manifest", "last_letter", ["x1"])
    (bad_manifest / "manifest.json").write_text("{not json")
    partial = source_output(tmp_path / "partial", "last_letter", ["x1", "x2"], committed={0})
    cases = {
        tmp_path / "missing": "no such folder",
        tmp_path / "file": "a file, not an s2d output",
        users: "not an s2d output (no manifest.json)",
        no_job: "no job.yaml, so its task and method are unknown",
        bad_manifest: "unreadable: ",
        partial: "`s2d generate` is unfinished, 1 of 2 shards committed",
    }
    for out, message in cases.items():
        spec = mixture_spec(tmp_path / "mix", [{"out": str(good)}, {"out": str(out)}])
        with pytest.raises(SourceError) as refused:
            check_sources(spec)
        line = str(refused.value)
        assert line.startswith(f"train.data[1] ({out}): ") and message in line and "\n" not in line, line
    spec = mixture_spec(tmp_path / "mix", [{"out": str(partial)}])
    assert len(check_sources(spec, allow_partial=True)) == 1


def test_an_altered_shard_of_a_source_fails_naming_the_source(tmp_path):
    source = source_output(tmp_path / "a", "last_letter", ["x1", "x2"])
    shard = next((source / "shards").glob("shard-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-9] + b"corrupted")
    with pytest.raises(SourceError, match=r"^train\.data\[0\] \(.*/a\): unreadable: .*shard-"):
        read_mixture(mixture_spec(tmp_path / "mix", [{"out": str(source)}]))


def test_a_missing_source_fails_before_anything_runs_or_is_written(tmp_path):
    spec = mixture_spec(tmp_path / "mix", [{"out": str(tmp_path / "gone")}])
    for stages in (("train",), ("eval",), ("generate", "train", "eval")):
        with pytest.raises(SourceError, match=r"train\.data\[0\] .*gone\): no such folder"):
            run_job(spec, stages, progress=False)
    assert not (tmp_path / "mix").exists() and not (tmp_path / "mix" / LEASE).exists()


def test_run_generates_only_when_the_jobs_own_out_is_a_source(tmp_path):
    other = {"out": str(tmp_path / "other")}
    alone = mixture_spec(tmp_path / "mix", [other])
    assert stages_to_run(alone, ("generate", "train", "eval")) == ("train", "eval")
    assert stages_to_run(alone, ("generate",)) == ("generate",)  # `s2d generate` still generates its own task
    mixed_in = mixture_spec(tmp_path / "mix", [other, {"out": str(tmp_path / "mix")}])
    assert stages_to_run(mixed_in, ("generate", "train", "eval")) == ("generate", "train", "eval")
    single = parse_spec({"model": "smollm2-135m"})
    assert stages_to_run(single, ("generate", "train", "eval")) == ("generate", "train", "eval")


def test_each_source_is_evaluated_with_its_own_task_and_the_mixtures_student(tmp_path):
    a = source_output(tmp_path / "a", "coin_flip", ["y1"])
    write_job_file(
        parse_spec(
            {
                "model": "smollm2-135m",
                "out": str(a),
                "task": {"name": "coin_flip"},
                "eval": {"num_inputs": 7, "seeds": 3},
            }
        )
    )
    spec = mixture_spec(tmp_path / "mix", [{"out": str(a)}], model=str(tmp_path / "student"), epochs=1)
    spec = parse_spec(spec.model_dump(mode="json") | {"eval": {"num_inputs": 3, "distilled": "merged"}})
    (source,) = check_sources(spec)
    evaluated = source_eval_spec(spec, source)
    # the source's own held-out set (its eval.num_inputs), the mixture's student and distilled form
    assert (evaluated.task.name, evaluated.out, evaluated.eval.num_inputs) == ("coin_flip", spec.out, 7)
    assert (evaluated.student, evaluated.eval.distilled, evaluated.train.data) == (spec.student, "merged", None)
    assert evaluated.has_student and evaluated.train.epochs == 1
    assert evaluated.eval.seeds == 1  # the student was trained once, whatever the source's own seeds


def source_metrics(out, task, distilled, weight, examples):
    return {
        "task": task,
        "method": "cot",
        "model": "smollm2-135m",
        "student": None,
        "eval_inputs": 4,
        "samples_for_system2": 1,
        "run": out,
        "source": {"out": out, "weight": weight, "examples": examples},
        "systems": [
            system_row("System 1 (base model, direct)", "system1", 0.25),
            system_row("Distilled System 1 (base + LoRA, direct)", "distilled", distilled),
        ],
        "comparisons": [
            {
                "measure": "accuracy",
                "system": "Distilled System 1 (base + LoRA, direct)",
                "versus": "System 1 (base model, direct)",
                "versus_kind": "system1",
                "inputs": 4,
                "difference": distilled - 0.25,
                "low": -0.5,
                "high": 0.9,
                "first_only": 1,
                "second_only": 0,
                "p_value": 1.0,
            }
        ],
    }


def test_the_mixture_report_has_one_section_per_source(tmp_path):
    sources = [
        source_metrics("runs/a", "last_letter", 0.5, 1.0, 16),
        source_metrics("runs/b", "coin_flip", 0.75, 2.0, 20),
    ]
    metrics = {
        "mixture": True,
        "task": "last_letter+coin_flip",
        "method": "cot+cot",
        "model": "smollm2-135m",
        "student": None,
        "run": str(tmp_path / "mix"),
        "sources": sources,
        "systems": [score | {"source": run["run"]} for run in sources for score in run["systems"]],
    }
    report = render_mixture_report(metrics)
    assert report.startswith("# s2d evaluation: a mixture of 2 sources / smollm2-135m")
    assert "| runs/a | last_letter / cot | 1 | 16 | 50.0% | +25.0 pts [-50.0, +90.0] | 1.000 |" in report
    assert "| runs/b | coin_flip / cot | 2 | 20 | 75.0% | +50.0 pts" in report
    assert "## Source 1: runs/a" in report and "### s2d evaluation: coin_flip / cot / smollm2-135m" in report
    eval_dir = tmp_path / "mix" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    written, chart = write_report([tmp_path / "mix"])  # `s2d report` on a mixture renders the same sections
    assert written.read_text() == report and chart.stat().st_size > 0


def test_sources_under_one_teacher_and_student_share_an_engine():
    replica = {"model": "m", "engine": {"dtype": "auto"}, "seed": 0, "max_lora_rank": 16, "task": "last_letter"}
    assert engine_key(replica) == engine_key(replica | {"task": "coin_flip", "method": {"name": "rar1"}})
    assert engine_key(replica) != engine_key(replica | {"seed": 1})
    assert engine_key(replica) != engine_key(replica | {"max_lora_rank": None})
