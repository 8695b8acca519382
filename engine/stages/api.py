"""s2d's Python API: run a job, or one stage of it, and get typed results back. The `s2d` CLI is a thin wrapper
over these functions.

    import s2d
    result = s2d.run_job("configs/demo.yaml", out="runs/try", **{"task.num_inputs": 8})
    result.generate.accepted, result.train.model_dir, result.eval.systems

A job is a JobSpec, or a YAML job file; keyword arguments override its keys (dotted keys through `**{...}`), with
Python values (the CLI's `key=value` strings are parsed as YAML instead). Heavy libraries (Ray, vLLM, DeepSpeed)
are imported only by the stage that runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from s2d.cluster.connect import embedded_dashboard, needs_dashboard
from s2d.engine.core.seeds import model_folder, train_run_folder, training_seed
from s2d.engine.core.spec import JobSpec, load_spec, parse_spec
from s2d.engine.data.lease import Lease
from s2d.engine.data.mixture import check_sources, stages_to_run
from s2d.engine.data.models import ModelNotFound, check_model_reference
from s2d.engine.data.ownership import claim_output, write_job_file
from s2d.engine.data.storage import OutputLocation
from s2d.engine.stages.results import EvalResult, GenerateResult, JobResult, PilotResult, StageResult, TrainResult

STAGES = ("generate", "train", "eval")


def job_spec(job: JobSpec | str | Path, overrides: Iterable[str] = (), values: Mapping[str, Any] | None = None):
    """A validated JobSpec from a spec or a job file, with CLI `overrides` (key=value) and typed `values`."""
    if isinstance(job, JobSpec):
        if not overrides and not values:
            return job
        return parse_spec(job.model_dump(mode="json"), tuple(overrides), values=values)
    return load_spec(job, tuple(overrides), values=values)


def run_job(
    job: JobSpec | str | Path,
    stages: Iterable[str] = STAGES,
    *,
    force: bool = False,
    allow_partial: bool = False,
    progress: bool = True,
    on_result: Callable[[StageResult], None] | None = None,
    **overrides: Any,
) -> JobResult:
    """Run `stages` of a job in order (generate, train, eval), all under one lease on the output.

    A job with `rounds` > 1 runs every stage once per round (s2d.engine.stages.rounds).
    `force`: discard a different job's shards in `out` instead of refusing. `allow_partial`: train and evaluate on
    what an unfinished generate committed instead of refusing. `on_result` is called as each stage ends (the CLI
    prints its line there). Raises on the first failing stage; what was committed stays and a rerun resumes.
    """
    spec = job_spec(job, values=overrides)
    stages = tuple(stages)
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown or not stages:
        raise ValueError(f"stages must be some of {list(STAGES)}, got {list(stages)}")
    if spec.rounds > 1:  # iterated distillation: each round a whole job in <out>/round-<r>/
        if stages != STAGES:
            raise ValueError(f"rounds={spec.rounds}: a rounds job runs every stage of each round (`s2d run`)")
        from s2d.engine.stages.rounds import run_rounds

        return run_rounds(
            spec, run_job, force=force, allow_partial=allow_partial, progress=progress, on_result=on_result
        )
    location = OutputLocation.of(spec.out)
    if not location.is_local and stages != ("generate",):
        raise ValueError(
            f"out={spec.out}: train and eval need a local or mounted path; only generate writes to a "
            "filesystem URI (copy the shards to a mounted path, or mount the bucket)"
        )
    if spec.has_student and {"train", "eval"} & set(stages):
        check_student(spec)
    if spec.train.data is not None:  # a mixture: its sources are checked before Ray starts (engine/data/mixture.py)
        stages = stages_to_run(spec, stages)
        if {"train", "eval"} & set(stages):
            check_sources(spec, allow_partial, skip_own="generate" in stages)
    results: dict[str, StageResult] = {}
    # before anything is written: `out` must be s2d's (a mixture's model/ and eval/ may go to a new folder)
    claim_output(location, create="generate" in stages or spec.train.data is not None)
    # Every stage holds the output's one lease, not a lease of its own: train reads the shards generate commits
    # (a train beside a generate would read a moving set) and writes model/, which eval reads, so any two of them
    # on one output conflict; one lease makes each stop at once with one line (OutputBusy) instead of racing.
    # Taken first: a job refused because another holds <out> must not touch it (job.yaml).
    with (
        Lease.acquire(spec.out, command="s2d " + " + ".join(stages)) as lease,
        embedded_dashboard(needs_dashboard(stages)),  # an embedded Ray: the dashboard only for Ray Train
    ):
        if "generate" not in stages:  # generate writes it once its manifest accepted this job (no conflict)
            write_job_file(spec)
        for stage in STAGES:
            if stage not in stages:
                continue
            if stage == "generate":
                result = _generate(spec, force, progress, lease)
            elif stage == "train":
                result = _train(spec, allow_partial, lease)
            else:
                result = _evaluate(spec, allow_partial)
            results[stage] = result
            if on_result is not None:
                on_result(result)
    return JobResult(spec, spec.out, **results)


def check_student(spec: JobSpec) -> None:
    """A student (train.model) that cannot load fails here, in one line naming the key, before Ray starts."""
    try:
        check_model_reference(spec.student)
    except ModelNotFound as problem:
        raise ModelNotFound(f"train.model (the student): {problem}") from None


def generate(job: JobSpec | str | Path, *, force: bool = False, progress: bool = True, **overrides: Any):
    """Sample the System 2 method, curate by self-consistency and commit Parquet shards to `out`."""
    return run_job(job, ("generate",), force=force, progress=progress, **overrides).generate


def train(job: JobSpec | str | Path, *, allow_partial: bool = False, **overrides: Any) -> TrainResult:
    """Fine-tune on the committed accepted pairs of `out` (LoRA or full, DeepSpeed ZeRO on Ray Train); an unfinished
    generate is refused unless `allow_partial`."""
    return run_job(job, ("train",), allow_partial=allow_partial, **overrides).train


def evaluate(job: JobSpec | str | Path, *, allow_partial: bool = False, **overrides: Any) -> EvalResult:
    """System 1, System 2 and the distilled System 1 on held-out inputs: `<out>/eval/report.md`, metrics.json; an
    output whose generate is unfinished is refused unless `allow_partial`."""
    return run_job(job, ("eval",), allow_partial=allow_partial, **overrides).eval


def pilot(
    job: JobSpec | str | Path,
    *,
    inputs: int = 200,
    held_out: int = 200,
    progress: bool = True,
    on_line: Callable[[str], None] | None = None,
    job_name: str | None = None,
    **overrides: Any,
) -> PilotResult:
    """A bounded run before the big one: the job's stages on its first `inputs` inputs and at most `held_out`
    held-out ones, into `<out>/pilot/`; acceptance, the threshold curve, agreement with System 2 before and after a
    short LoRA (paired test), a projection of the full job, and one verdict (engine/stages/pilot.py)."""
    from s2d.engine.stages.pilot import run_pilot

    spec = job_spec(job, values=overrides)
    if spec.has_student:
        check_student(spec)
    name = job_name or (None if isinstance(job, JobSpec) else str(job))
    lines = on_line or (lambda line: None)
    return run_pilot(spec, run_job, inputs=inputs, held_out=held_out, progress=progress, on_line=lines, job_name=name)


def _generate(spec: JobSpec, force: bool, progress: bool, lease: Lease | None) -> GenerateResult:
    from s2d.engine.stages.generate import run_generate

    return run_generate(spec, force=force, progress=progress, lease=lease)


def _train(spec: JobSpec, allow_partial: bool, lease: Lease) -> TrainResult:
    from s2d.training.trainer import train_model

    started = time.monotonic()
    metrics = train_model(spec, allow_partial=allow_partial, lease=lease)
    seeds = [_seed_line(0, spec, metrics)] if spec.eval.seeds > 1 else []
    for seed in range(1, spec.eval.seeds):  # eval.seeds: the same pairs, another training seed, a folder of its own
        out = spec.out_path.expanduser().resolve()
        seeded = train_model(
            seed_spec(spec, seed),
            out / model_folder(seed),
            allow_partial=allow_partial,
            lease=lease,
            run_dir=out / train_run_folder(seed),
            reuse_finished=True,  # a finished seed is kept, not retrained
        )
        seeds.append(_seed_line(seed, spec, seeded))
    return TrainResult(
        model_dir=metrics["model_dir"],
        steps=metrics.get("steps", 0),
        examples=metrics.get("examples", 0),
        losses=list(metrics.get("losses") or []),
        resumed_from_step=metrics.get("resumed_from_step"),
        merged_dir=metrics.get("merged_dir"),
        seconds=time.monotonic() - started,
        metrics=metrics,
        seeds=seeds,
    )


def seed_spec(spec: JobSpec, seed: int) -> JobSpec:
    """Seed `seed`'s job: the same job with its training seed offset (engine/core/seeds.py)."""
    return spec.model_copy(
        update={"train": spec.train.model_copy(update={"seed": training_seed(spec.train.seed, seed)})}
    )


def _seed_line(seed: int, spec: JobSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """One seed's fine-tune in a TrainResult: where its model is and whether this run trained it."""
    return {
        "seed": seed,
        "train_seed": training_seed(spec.train.seed, seed),
        "model_dir": metrics["model_dir"],
        "steps": metrics.get("steps", 0),
        "losses": list(metrics.get("losses") or []),
        "reused": bool(metrics.get("reused_finished_run")),
    }


def _evaluate(spec: JobSpec, allow_partial: bool) -> EvalResult:
    from s2d.engine.stages.evaluate import run_eval

    started = time.monotonic()
    metrics = run_eval(spec, allow_partial=allow_partial)
    eval_dir = spec.out_path / "eval"
    return EvalResult(
        report=str(eval_dir / "report.md"),
        chart=str(eval_dir / "report.png"),
        systems=list(metrics["systems"]),
        seconds=time.monotonic() - started,
        metrics=metrics,
    )
