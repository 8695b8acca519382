"""`s2d pilot`'s pure parts: the threshold curve, the projection's arithmetic, the verdict rule; and the stage's
reading of an output (built here, no Ray), its derived job and where it may write."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2d.engine.cli.parser import parse_args
from s2d.engine.core.pilot import (
    DISTILS,
    DOES_NOT_DISTIL,
    INCONCLUSIVE,
    InputVotes,
    decide,
    min_votes_for,
    project,
    threshold_curve,
)
from s2d.engine.core.spec import load_spec
from s2d.engine.core.stats import paired_comparison
from s2d.engine.core.votes import ANSWER_COUNTS_TYPE
from s2d.engine.data.ownership import ForeignOutput, claim_output, claim_pilot_folder
from s2d.engine.stages import pilot as pilot_stage
from s2d.engine.stages.pilot import analyse, input_votes, pilot_spec, render_pilot_report


def test_min_votes_matches_the_jobs_strict_share():
    assert min_votes_for(0.3, 8) == 3  # 3/8 = 0.375 > 0.3, 2/8 = 0.25 is not
    assert min_votes_for(0.5, 8) == 5  # 4/8 is not strictly above a half
    assert min_votes_for(0.125, 8) == 2  # 1/8 is exactly the threshold: not above it
    assert min_votes_for(0.0, 4) == 1


def test_threshold_curve_counts_untied_inputs_at_each_k_and_their_precision():
    inputs = [
        InputVotes("a", 8, False, 8, "a"),
        InputVotes("b", 4, False, 8, "c"),
        InputVotes("c", 2, True, 8, "c"),  # tied: kept at no threshold
        InputVotes(None, 0, False, 8, "d"),  # no answer
        InputVotes("e", 3, False, 8, "e"),
    ]
    curve = threshold_curve(inputs, 8)
    assert [point.accepted for point in curve] == [3, 3, 3, 2, 1, 1, 1, 1]
    assert [point.right for point in curve] == [2, 2, 2, 1, 1, 1, 1, 1]
    assert curve[0].share == pytest.approx(3 / 5) and curve[2].precision == pytest.approx(2 / 3)
    assert curve[3].precision == pytest.approx(1 / 2) and curve[7].precision == 1.0


def test_threshold_curve_without_labels_or_inputs():
    curve = threshold_curve([InputVotes("a", 2, False, 2)], 2)
    assert [(p.accepted, p.right, p.precision) for p in curve] == [(1, None, None), (1, None, None)]
    assert [p.share for p in threshold_curve([], 4)] == [0.0] * 4


def test_threshold_curve_takes_the_share_where_an_input_has_more_samples():
    # a perturbation criterion's input carries variants x n samples: 6 of 16 is 3 of 8
    curve = threshold_curve([InputVotes("a", 6, False, 16)], 8)
    assert [p.accepted for p in curve] == [1, 1, 1, 0, 0, 0, 0, 0]


def test_projection_arithmetic_is_shown_and_right():
    projection = project(
        pilot_inputs=200,
        pilot_accepted=100,
        full_inputs=1_000_000,
        seconds_per_input=0.36,
        replicas=2,
        output_bytes=50_000,
        start_seconds=30,
    )
    assert projection.replica_hours == pytest.approx((1_000_000 * 0.36 * 2 + 2 * 30) / 3600)
    assert projection.output_bytes == pytest.approx(250 * 1_000_000)
    assert projection.accepted == pytest.approx(500_000)
    assert projection.accepted_low < 500_000 < projection.accepted_high
    assert projection.accepted_low == pytest.approx(0.4313 * 1_000_000, rel=1e-3)  # Wilson 100/200
    hours, size, accepted = projection.arithmetic
    assert "1,000,000 inputs x 0.360 s/input x 2 replica(s) + 2 x 30 s start-up) / 3600 = 200.02" in hours
    assert "50,000 B / 200 pilot inputs x 1,000,000 inputs = 250,000,000 B (250.0 MB)" in size
    assert accepted.startswith("accepted = 100 / 200 (50.0%") and "= 500,000 [" in accepted
    with pytest.raises(ValueError):
        project(pilot_inputs=0, pilot_accepted=0, full_inputs=1, seconds_per_input=1, replicas=1, output_bytes=0)


def _agreement(after_only: int, before_only: int, both: int, neither: int):
    """A paired comparison, distilled (after) first, base System 1 (before) second, as eval's metrics give it."""
    pairs = [(True, False)] * after_only + [(False, True)] * before_only
    pairs += [(True, True)] * both + [(False, False)] * neither
    return paired_comparison(
        {str(i): a for i, (a, _) in enumerate(pairs)}, {str(i): b for i, (_, b) in enumerate(pairs)}
    )


def test_verdict_rule_in_order():
    assert decide(0, None).label == DOES_NOT_DISTIL
    assert decide(0, _agreement(30, 0, 10, 10)).label == DOES_NOT_DISTIL  # nothing accepted wins
    assert decide(5, None).label == INCONCLUSIVE
    distils = decide(90, _agreement(29, 7, 29, 33))  # the demo's numbers: p = 3e-4
    assert distils.label == DISTILS and "McNemar p = 0.00031" in distils.because and "90 accepted" in distils.because
    assert decide(90, _agreement(0, 0, 27, 2)).label == INCONCLUSIVE  # coin flip: no change on few inputs
    assert decide(90, _agreement(2, 12, 20, 150)).label == DOES_NOT_DISTIL  # agreement fell: gain excluded
    assert decide(90, _agreement(0, 0, 50, 950)).label == DOES_NOT_DISTIL  # no change, many inputs: excluded
    assert decide(90, _agreement(12, 2, 20, 150)).label == DISTILS
    assert decide(90, _agreement(5, 2, 20, 20)).label == INCONCLUSIVE  # up, not significant, not excluded


def test_pilot_folder_claims_out_and_refuses_a_users_folder(tmp_path):
    out = tmp_path / "job"
    pilot = claim_pilot_folder(out)
    assert pilot.root == str(out / "pilot") and (out / ".s2d-output.json").is_file()
    (out / "pilot" / "report.md").write_text("old")
    (out / "pilot" / "run").mkdir()
    claim_pilot_folder(out)  # the pilot's own names: a rerun writes over them
    claim_output(out, create=True)  # the full job still writes into <out>
    (out / "pilot" / "notes.txt").write_text("mine")
    with pytest.raises(ForeignOutput, match="notes.txt"):
        claim_pilot_folder(out)
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("mine")
    with pytest.raises(ForeignOutput, match="not an s2d output"):
        claim_pilot_folder(users)
    assert sorted(path.name for path in users.iterdir()) == ["thesis.tex"]


def test_pilot_spec_takes_the_jobs_first_inputs_and_a_lora(tmp_path):
    spec = load_spec("configs/demo.yaml", ("train.mode=full", "train.deepspeed=zero3"))
    derived = pilot_spec(spec, 50, 20, str(tmp_path / "run"))
    assert (derived.task.num_inputs, derived.eval.num_inputs, derived.train.mode) == (50, 20, "lora")
    assert derived.out == str(tmp_path / "run") and derived.method == spec.method and derived.sampling == spec.sampling
    assert pilot_spec(spec, 50, 500, "x").eval.num_inputs == spec.eval.num_inputs  # never more than the job holds


def test_the_cli_takes_pilot_with_its_sizes():
    args = parse_args(["pilot", "configs/demo.yaml", "--inputs", "40", "--held-out", "16", "sampling.n=4"])
    assert (args.command, args.inputs, args.held_out, args.overrides) == ("pilot", 40, 16, ["sampling.n=4"])
    assert parse_args(["pilot", "configs/demo.yaml"]).inputs == 200


def _write_tables(run):
    """A tiny output: 2 accepted, 2 rejected (one tie), as generate writes them."""
    accepted = pa.table(
        {"input_id": ["i1", "i2"], "answer": ["a", "b"], "votes": [3, 4], "num_samples": [4, 4]}
        | {"system2_tokens": [10.0, 20.0], "shard_id": pa.array([0, 0], pa.int32())}
    )
    counts = pa.array([[{"answer": "c", "votes": 1}], [{"answer": "d", "votes": 2}, {"answer": "e", "votes": 2}]])
    rejected = pa.table(
        {"input_id": ["i3", "i4"], "answer_counts": counts.cast(ANSWER_COUNTS_TYPE), "num_samples": [4, 4]}
        | {"reason": ["below_threshold", "tie"], "system2_tokens": [5.0, 5.0]}
    )
    for folder, table in (("shards", accepted), ("rejected", rejected)):
        (run / folder).mkdir(parents=True)
        pq.write_table(table, run / folder / "shard-00000.parquet")
    (run / "metrics.json").write_text(
        json.dumps(
            {"inputs": 4, "stage_seconds": {"generate + curate pipeline": 12.0, "replica start + first batch": 9}}
        )
    )


def test_the_stage_reads_votes_tokens_and_writes_a_verdict(tmp_path, monkeypatch):
    run = tmp_path / "run"
    labels = {"i1": "a", "i2": "x", "i3": "c", "i4": "d"}
    monkeypatch.setattr(pilot_stage, "_labels", lambda spec, count: labels)  # the tables' ids are made up
    _write_tables(run)
    votes = input_votes(run, labels)
    assert [(v.top_answer, v.top_votes, v.tied, v.label) for v in votes] == [
        ("a", 3, False, "a"),
        ("b", 4, False, "x"),
        ("c", 1, False, "c"),
        ("d", 2, True, "d"),
    ]
    spec = load_spec("configs/demo.yaml", ("sampling.n=4",))
    derived = pilot_spec(spec, 4, 4, str(run))
    comparison = {"measure": "agreement", "versus_kind": "system1", "system": "d", "versus": "s"}
    comparison |= vars(_agreement(3, 0, 1, 0))
    evaluated = SimpleNamespace(
        metrics={"eval_inputs": 4, "engine_start_s": 4.0, "systems": [], "comparisons": [comparison]}
    )
    generated = SimpleNamespace(accepted=2, rejected=2, quarantined=0, seconds=15.0)
    metrics = analyse(spec, derived, generated, SimpleNamespace(steps=3, examples=2), evaluated, 1000, {"generate": 15})
    assert metrics["tokens"] == 4 * (10 + 20 + 5 + 5) and metrics["tokens_per_accepted"] == 80
    assert metrics["reasons"] == {"below_threshold": 1, "tie": 1} and metrics["job_min_votes"] == 2
    assert [p["accepted"] for p in metrics["threshold_curve"]] == [3, 2, 2, 1]
    assert metrics["rate"]["seconds_per_input"] == pytest.approx((12.0 - 4.0) / 4)
    assert metrics["projection"]["accepted"] == pytest.approx(500)
    assert metrics["verdict"]["label"] == INCONCLUSIVE  # 3 of 4 up is not significant on 4 inputs
    metrics["pilot_seconds"] = 20.0
    report = render_pilot_report(metrics)
    assert "**Verdict: inconclusive**" in report and "| 2 of 4 (the job's vote) | 2 | 50.0% | 1 (50.0%) |" in report
    assert "(12.0 s generate pipeline - 4.0 s engine start measured by eval) / 4 inputs = 2.000" in report


def _stub_stages(calls):
    """run_job's stand-in: generate writes the tiny output's tables, train and eval return what they would."""

    def run_stages(spec, stages, force=False, progress=True, on_result=None):
        calls.append((spec, stages, force))
        if stages == ("generate",):
            _write_tables(spec.out_path)
            generated = SimpleNamespace(accepted=2, rejected=2, quarantined=0, seconds=15.0)
            return SimpleNamespace(generate=generated)
        trained = SimpleNamespace(steps=3, examples=2)
        comparison = {"measure": "agreement", "versus_kind": "system1", "system": "d", "versus": "s"}
        comparison |= vars(_agreement(3, 0, 1, 0))
        evaluated = SimpleNamespace(
            metrics={"eval_inputs": 4, "engine_start_s": 4.0, "systems": [], "comparisons": [comparison]}
        )
        for result in (trained, evaluated):
            on_result(result)
        return SimpleNamespace(train=trained, eval=evaluated)

    return run_stages


def test_run_pilot_runs_the_jobs_stages_on_a_slice_and_writes_report_and_metrics(tmp_path):
    from s2d.engine.stages.pilot import run_pilot

    spec = load_spec("configs/demo.yaml", ("sampling.n=4", f"out={tmp_path / 'job'}"))
    calls, lines = [], []
    result = run_pilot(spec, _stub_stages(calls), inputs=4, held_out=3, progress=False, on_line=lines.append)
    derived = calls[0][0]
    assert [stages for _, stages, _ in calls] == [("generate",), ("train", "eval")] and calls[0][2] is True
    assert derived.out == str(tmp_path / "job" / "pilot" / "run") and derived.task.num_inputs == 4
    assert derived.eval.num_inputs == 3
    assert result.verdict == INCONCLUSIVE and result.report == str(tmp_path / "job" / "pilot" / "report.md")
    metrics = json.loads((tmp_path / "job" / "pilot" / "metrics.json").read_text())
    assert metrics["full_inputs"] == 288 and metrics["projection"]["full_inputs"] == 288
    assert set(metrics["phase_seconds"]) == {"generate", "train", "eval"}
    assert lines[0].startswith("pilot: 4 of the job's 288 inputs") and lines[-1].startswith("pilot: verdict:")
    claim_output(tmp_path / "job", create=True)  # the full job may write into <out> after the pilot


def test_run_pilot_stops_after_generate_when_nothing_passes(tmp_path):
    from s2d.engine.stages.pilot import run_pilot

    def nothing_accepted(spec, stages, force=False, progress=True, on_result=None):
        assert stages == ("generate",)
        (spec.out_path / "rejected").mkdir(parents=True)
        counts = pa.array([[]], ANSWER_COUNTS_TYPE)
        table = pa.table({"input_id": ["i1"], "answer_counts": counts, "num_samples": [4]})
        table = table.append_column("reason", pa.array(["no_answer"])).append_column("system2_tokens", pa.array([7.0]))
        pq.write_table(table, spec.out_path / "rejected" / "shard-00000.parquet")
        return SimpleNamespace(generate=SimpleNamespace(accepted=0, rejected=1, quarantined=0, seconds=3.0))

    spec = load_spec("configs/demo.yaml", ("sampling.n=4", f"out={tmp_path / 'job'}"))
    result = run_pilot(spec, nothing_accepted, inputs=1, held_out=3, progress=False)
    assert result.verdict == DOES_NOT_DISTIL and result.metrics["reasons"] == {"no_answer": 1}
    assert result.metrics["rate"]["source"] == "generate wall" and result.metrics["agreement"] is None
    assert "No paired agreement test" in (tmp_path / "job" / "pilot" / "report.md").read_text()
