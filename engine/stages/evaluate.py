"""Evaluation on held-out inputs: System 1 (base, direct), System 2 (the method), distilled System 1.

One replica actor serves System 1, System 2 and, for a LoRA result, the distilled System 1 (the adapter on the same
engine, vLLM with LoRA enabled). A merged model (eval.distilled=merged) or a full fine-tune is a different model, so
it gets a second replica. A student of its own (train.model) adds its base System 1 beside the teacher's, on a
replica of its own (engine/stages/eval_systems.py: which system runs where). System 2 is sampled n times per input
(eval.system2_samples, default the job's sampling.n) and reported two ways: majority vote over n (what curation
trusts) and mean single-sample accuracy. Each system's agreement with System 2 (its answers equal to System 2's
vote, on the inputs where that vote meets the job's criterion) measures what distillation transfers, labels or not.
Intervals take the input as the unit (one input's n samples are correlated), and the distilled model is compared
with the others pair by pair on the same inputs, matched by input id: the scoring is engine/core/scoring.py, pure;
the report (table + chart) is engine/stages/report.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from s2d.engine.core.criteria import input_context
from s2d.engine.core.methods import Extractor, resolve_method
from s2d.engine.core.program import Chain, SamplingRequest
from s2d.engine.core.scoring import (
    Outcomes,
    agreement_outcomes,
    input_keys,
    majority_outcomes,
    paired_comparisons,
    score_majority,
    score_outcomes,
    single_outcomes,
    system2_reference,
    with_agreement,
)
from s2d.engine.core.seeds import seed_entry, seed_kind, seeds_summary
from s2d.engine.core.spec import JobSpec
from s2d.engine.core.tasks import TaskInput, get_task
from s2d.engine.data.folder_swap import clear_leftovers, replace_folder, staging_folder
from s2d.engine.stages.chart import plot_runs
from s2d.engine.stages.eval_systems import distilled_model, replica_plans, run_plans, seed_models, system_names
from s2d.engine.stages.report import render_mixture_report, render_report


def held_out_inputs(spec: JobSpec) -> list[TaskInput]:
    """The eval split, minus anything this job distilled from: disjoint by construction, whatever the task."""
    if spec.data.path:
        from s2d.engine.data.sources import labeled_eval_inputs

        return labeled_eval_inputs(spec)
    task = get_task(spec.task.name)
    distilled = {item.input_id for item in task.generate(spec.task.num_inputs, spec.task.seed, "train")}
    return [
        item for item in task.generate(spec.eval.num_inputs, spec.task.seed, "eval") if item.input_id not in distilled
    ]


def run_eval(spec: JobSpec, model_dir: Path | None = None, *, allow_partial: bool = False) -> dict:
    """Evaluate the three systems; `<out>/eval/` is replaced whole. `allow_partial`: evaluate a model trained on an
    unfinished generate instead of refusing (the caller holds the output's lease). A mixture (train.data) is
    evaluated on each source's own held-out inputs (`run_mixture_eval`)."""
    from s2d.training.trainer import check_generate_finished

    out = spec.out_path
    model_dir = Path(model_dir or out / "model")
    if spec.train.data is not None:
        metrics = run_mixture_eval(spec, model_dir, allow_partial)
    else:
        check_generate_finished(out, allow_partial, stage="eval")
        metrics = evaluate_systems(spec, model_dir)
    write_eval_folder(out / "eval", metrics)
    return metrics


def run_mixture_eval(spec: JobSpec, model_dir: Path, allow_partial: bool) -> dict:
    """The one student of a mixture on each source job's own held-out inputs (its task, data and method; its model
    as the teacher), one section per source: `sources` holds each source's metrics as a single-source eval has them,
    and `systems` all their rows, each with its `source`."""
    from s2d.engine.data.mixture import check_sources, source_eval_spec

    trained = _train_metrics(model_dir).get("mixture") or []
    by_out = {entry["out"]: entry for entry in trained}
    runs = []
    sources = check_sources(spec, allow_partial)
    evaluated = evaluate_jobs([source_eval_spec(spec, source) for source in sources], model_dir)
    for source, metrics in zip(sources, evaluated):
        taken = by_out.get(str(source.out), {})
        metrics.update(
            run=str(source.out),
            source={
                "out": str(source.out),
                "fingerprint": source.manifest.fingerprint,
                "weight": source.weight,
                "examples": taken.get("examples"),  # per epoch, as trained (None: trained before it was recorded)
                "duplicates": taken.get("duplicates"),
            },
        )
        runs.append(metrics)
    return {
        "mixture": True,
        "task": "+".join(run["task"] for run in runs),
        "method": "+".join(run["method"] for run in runs),
        "model": spec.model,
        "student": spec.student,
        "run": str(spec.out_path),
        "eval_inputs": sum(run["eval_inputs"] for run in runs),
        "distilled_model": runs[0]["distilled_model"] if runs else None,
        "engine_start_s": round(sum(run["engine_start_s"] for run in runs), 2),
        "sources": runs,
        "systems": [score | {"source": run["run"]} for run in runs for score in run["systems"]],
    }


def _train_metrics(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "train_metrics.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def evaluate_systems(spec: JobSpec, model_dir: Path) -> dict:
    """One job's systems on its held-out inputs (the module's docstring): the metrics, not yet written."""
    return evaluate_jobs([spec], model_dir)[0]


def evaluate_jobs(specs: Sequence[JobSpec], model_dir: Path) -> list[dict]:
    """Each job's systems on its own held-out inputs, one metrics dict per job; jobs whose replicas would be the
    same engine (a mixture's sources under one teacher and student) share it: one engine start, not one per job."""
    from s2d.actors.replica import sampling_request

    prepared, jobs = [], []
    for spec in specs:
        adapter, other_model, distilled_name = distilled_model(spec, model_dir)
        seeds = seed_models(spec, Path(model_dir).parent)
        inputs = held_out_inputs(spec)
        # bsm's templates read the task's fields (instruction, response_a, response_b), not just the question
        contexts = [input_context(get_task(spec.task.name), item) for item in inputs]
        direct = SamplingRequest(n=1, temperature=0.0, max_tokens=spec.eval.max_tokens)
        system2_request = replace(sampling_request(spec.sampling), n=spec.eval.system2_samples or spec.sampling.n)
        seed_dirs = {0: adapter or other_model} | {seed: seeded or model for seed, seeded, model in seeds}
        prepared.append((spec, inputs, system2_request.n, seed_dirs, distilled_name))
        jobs.append((spec, replica_plans(spec, adapter, other_model, direct, system2_request, seeds), contexts))
    return [_metrics(*job, *ran) for job, ran in zip(prepared, run_plans(jobs))]


def _metrics(
    spec: JobSpec,
    inputs: list[TaskInput],
    n: int,
    seed_dirs: dict[int, str | None],
    distilled_name: str,
    chains: dict[str, list[list[Chain]]],
    timings: dict[str, float],
    engine_start_s: float,
) -> dict:
    """One job's scores, comparisons and metrics from its systems' chains (kind -> each input's chains)."""
    task = get_task(spec.task.name)
    system2 = chains["system2"]
    extractor = resolve_method(spec.method.model_dump()).extractor
    # The reference answer is the job's own criterion: the vote at curate.threshold (a plurality for the rules
    # that decide otherwise: perturbation's variants and usc's judge are not rerun on held-out inputs).
    threshold = spec.curate.threshold if spec.curate.rule == "majority" else 0.0
    reference = system2_reference(task.name, system2, extractor, threshold)

    keys = input_keys(inputs)
    outcomes: dict[str, tuple[Outcomes, Outcomes]] = {}  # system -> (accuracy, agreement) per input id

    def scored(name: str, kind: str, chains: list[list[Chain]], method_extractor: Extractor | None = None):
        correct = single_outcomes(task.name, inputs, chains, method_extractor)
        agrees = agreement_outcomes(task.name, chains, reference, method_extractor, keys)
        outcomes[name] = (correct, agrees)
        return with_agreement(score_outcomes(name, kind, correct, chains), agrees)

    scores = []
    for kind, name in system_names(spec, n, distilled_name).items():  # in the report's order
        if kind == "system2_majority":
            scores.append(score_majority(name, task.name, inputs, system2, extractor))
            outcomes[name] = (majority_outcomes(task.name, inputs, system2, extractor), {})
        else:
            scores.append(scored(name, kind, chains[kind], extractor if kind == "system2" else None))
    scores = [replace(score, latency_s=timings[score.kind]) for score in scores]  # System 2's majority: its samples
    comparisons = paired_comparisons([(score, *outcomes[score.system]) for score in scores])
    entries = []  # eval.seeds: each seed's distilled System 1 beside seed 0's row (not rows of their own)
    distilled = next(score for score in scores if score.kind == "distilled")
    others = [(other, *outcomes[other.system]) for other in scores if other.kind != "distilled"]
    for seed in range(spec.eval.seeds if spec.eval.seeds > 1 else 0):
        name = f"{distilled.system}, seed {seed}"
        score = distilled if seed == 0 else scored(name, "distilled", chains[seed_kind(seed)])
        paired = paired_comparisons([(score, *outcomes[score.system]), *others])
        base = [c for c in paired if c["measure"] == "accuracy" and c["versus_kind"] == "system1"]
        versus_base = {key: base[0][key] for key in ("difference", "low", "high", "p_value")} if base else None
        entries.append(seed_entry(seed, spec.train.seed, seed_dirs[seed], asdict(score), versus_base=versus_base))
    metrics = {
        "task": task.name,
        "method": spec.method.name,
        "model": spec.model,
        "student": spec.student if spec.has_student else None,  # the model trained, when not the teacher
        "eval_inputs": len(inputs),
        "samples_for_system2": n,
        "distilled_model": seed_dirs[0],
        "run": str(spec.out_path),
        "agreement_reference": {"threshold": threshold, "inputs": sum(answer is not None for answer in reference)},
        "seconds_per_input": timings,
        "engine_start_s": round(engine_start_s, 2),
        "systems": [asdict(score) for score in scores],
        "comparisons": comparisons,
    }
    if entries:
        metrics["seeds"] = seeds_summary(entries)
    return metrics


def _keep_foreign_files(eval_dir: Path, staged: Path) -> None:
    """What a user put in eval/ beside s2d's three files moves with the swap: s2d replaces only its own files."""
    if not eval_dir.is_dir():
        return
    for entry in eval_dir.iterdir():
        if not (staged / entry.name).exists():
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, staged / entry.name)


def write_eval_folder(eval_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, report.md and report.png, written beside `eval_dir` and swapped in whole: a crash leaves the
    previous evaluation's three files, never a new metrics.json beside an old report."""
    clear_leftovers(eval_dir)
    staged = staging_folder(eval_dir)
    try:
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_runs(metrics.get("sources") or [metrics], staged / "report.png")  # a mixture: one colour per source
        (staged / "report.md").write_text(
            render_mixture_report(metrics) if metrics.get("sources") else render_report(metrics)
        )
        _keep_foreign_files(eval_dir, staged)
        replace_folder(staged, eval_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after the swap; a failure leaves no temporary folder
