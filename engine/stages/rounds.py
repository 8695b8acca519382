"""Iterated System 2 distillation: `rounds: k` (or `s2d run JOB --rounds k`) runs the job k times, each round sampling
the method from the round before's distilled model, in `<out>/round-<r>/` (each a whole s2d output: manifest,
shards, model/, eval/), and writes `<out>/rounds.md` and `rounds.json`: the rounds side by side.

Which model samples round r+1: round r's merged model (a plain local folder that generate's replicas load as any
model, whose weights the samples' fingerprint already covers), not the adapter loaded into the replicas' engines:
generation serves no adapter, and the merged folder is what a team would deploy. What trains: the student's base
again (s2d.engine.core.rounds says why).

Resumable per round, under one lease on `<out>`: a round is done when rounds.json records it with the job and
the samples' fingerprint this run would use; it is then not redone, only read back (every file verified against
its manifest, as every reader does). Any other round reruns the stages its change needs (`stages_to_redo`: a
changed eval section only re-evaluates), each resuming what it committed. A round
r that was redone gives round r+1 another sampler (new weights, another fingerprint): round r+1's samples are then
refused as another job's, not mixed, until `--force` redoes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s2d.engine.core.rounds import (
    ROUNDS_DATA,
    ROUNDS_REPORT,
    STAGES,
    RoundRow,
    render_rounds,
    round_keys,
    round_row,
    round_spec,
    rounds_json,
    stages_to_redo,
)
from s2d.engine.core.spec import JobSpec
from s2d.engine.data.lease import Lease
from s2d.engine.data.manifest import OutputConflict, read_manifest
from s2d.engine.data.ownership import claim_output, write_job_file
from s2d.engine.data.storage import OutputLocation
from s2d.engine.stages.console import say
from s2d.engine.stages.results import JobResult, RoundsResult


def run_rounds(
    spec: JobSpec,
    run_job: Callable[..., JobResult],
    *,
    force: bool = False,
    allow_partial: bool = False,
    progress: bool = True,
    on_result=None,
) -> JobResult:
    """Run the rounds of `spec` in order (see the module's docstring), each round's job through `run_job` (the API's,
    passed in: it dispatches here); the result holds the last round's stages (those run now) and the report across
    rounds."""
    from s2d.engine.data.fingerprint import generation_fingerprint

    if spec.train.data is not None:  # a mixture trains on its sources, not on the round's pairs
        raise ValueError("rounds with train.data (a mixture) are not supported: each round trains on its own pairs")
    location = claim_output(spec.out, create=True)
    if not location.is_local:
        raise ValueError(f"out={spec.out}: rounds train and evaluate, which need a local or mounted path")
    out = spec.out_path
    rows: list[RoundRow] = []
    reused: list[int] = []
    last: JobResult | None = None
    with Lease.acquire(spec.out, command=f"s2d run --rounds {spec.rounds}"):
        write_job_file(spec)
        records = recorded_rounds(out)
        sampler: str | None = None
        for number in range(1, spec.rounds + 1):
            job = round_spec(spec, number, sampler)
            keys = round_keys(job, generation_fingerprint(job))
            stages = stages_to_redo(records.get(number), keys) if (job.out_path / "eval").is_dir() else STAGES
            if not stages:
                say(f"round {number} of {spec.rounds}: done earlier, not redone ({job.out})")
                reused.append(number)
            else:
                say(f"round {number} of {spec.rounds}: {' + '.join(stages)}, sampled from {job.model} -> {job.out}")
                try:
                    last = run_job(
                        job, stages, force=force, allow_partial=allow_partial, progress=progress, on_result=on_result
                    )
                except OutputConflict:
                    raise OutputConflict(
                        f"round {number}: {job.out} holds samples of another sampler or job than this round's "
                        f"({job.model}; round {number - 1} was redone, or the job changed): rerun with --force to "
                        "redo it from this one"
                    ) from None
            rows.append(measure_round(job, number, keys))
            write_rounds(location, rows, spec.rounds)  # after every round: a killed job keeps the finished ones
            sampler = next_sampler(job)
    return JobResult(
        spec,
        spec.out,
        *(() if last is None else (last.generate, last.train, last.eval)),
        rounds=RoundsResult(
            report=location.path(ROUNDS_REPORT),
            data=location.path(ROUNDS_DATA),
            rows=[json.loads(rounds_json([row], spec.rounds))["rows"][0] for row in rows],
            reused=reused,
        ),
    )


def recorded_rounds(out: Path) -> dict[int, dict[str, Any]]:
    """The rounds an earlier run finished (rounds.json), by number; an unreadable file records none (all rerun, each
    resuming what it committed)."""
    path = out / ROUNDS_DATA
    try:
        rows = json.loads(path.read_text())["rows"]
        return {int(row["round"]): row for row in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def measure_round(job: JobSpec, number: int, keys: dict[str, str]) -> RoundRow:
    """A finished round's row, read from its output: the manifest's counts, every committed row's tokens (each file
    verified against the manifest) and eval/metrics.json."""
    from s2d.engine.data.shards import read_committed
    from s2d.engine.stages.eval_metrics import load_metrics

    manifest = read_manifest(job.out_path)
    if manifest is None:
        raise FileNotFoundError(f"round {number}: {job.out} has no manifest.json")
    groups: list[tuple[float, int]] = []
    for kind in ("shards", "rejected"):
        table = read_committed(job.out_path, kind, columns=["num_samples", "system2_tokens"])
        groups += zip(table.column("system2_tokens").to_pylist(), table.column("num_samples").to_pylist())
    groups = [(tokens or 0.0, samples or 0) for tokens, samples in groups]
    counts = manifest.counts.model_dump()
    return round_row(number, job.model, keys, counts, groups, load_metrics(job.out_path))


def next_sampler(job: JobSpec) -> str:
    """The model round r+1 samples from: round r's merged LoRA model, or its full fine-tune."""
    model = job.out_path.resolve() / "model"
    for folder in (model / "merged", model):
        if (folder / "config.json").is_file():
            return str(folder)
    raise FileNotFoundError(f"{model} holds no whole model for the next round to sample from (train.merge=true?)")


def write_rounds(location: OutputLocation, rows: list[RoundRow], rounds: int) -> None:
    location.write_bytes_atomic(rounds_json(rows, rounds).encode(), ROUNDS_DATA)
    location.write_bytes_atomic(render_rounds(rows, rounds).encode(), ROUNDS_REPORT)
