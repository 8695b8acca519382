"""The generate stage: inputs -> vLLM replicas (sampling) -> curation -> Parquet shards, as one Ray Data pipeline.

Two passes over the source. The first validates every row and counts the inputs of each shard (so a
shard knows when it is complete); the second feeds the inputs of uncommitted shards into Ray Data as
blocks in the object store (which spills to disk, so the driver's memory does not grow with the job).
Ray Data streams the blocks through a pool of replica actors and a curation stage; the driver commits
each shard when its last input arrives. Every input comes out exactly once: accepted (shards/),
rejected with the criterion's reason (rejected/), or quarantined as bad input (quarantine/).

Fault tolerance: a replica whose process dies (kill -9, OOM) is restarted by Ray and its in-flight batch
retried (the shard writer drops any row it has already seen); an engine error restarts the replica the
same way until `generation.max_engine_failures` is reached job-wide, which fails the job with the cause.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.card import write_card
from engine.consistency import curate_generated, curate_kwargs
from engine.models import check_model_reference
from engine.progress import JobProgress, ProgressDisplay, write_metrics
from engine.shards import ShardWriter, check_accounting, curated_table, num_shards_for, shard_of, spec_fingerprint
from engine.sources import Quarantined, iter_inputs, preview, source_fingerprint
from engine.spec import JobSpec
from engine.tasks import TaskInput, get_task

BATCHES_PER_REPLICA = 2  # batches a generation replica runs at once (see _replica_stage)
CURATE_SECONDS_KEY = b"s2d_curate_seconds"


@dataclass(frozen=True)
class GenerateSummary:
    inputs: int
    skipped_committed: int
    accepted: int
    rejected: int
    quarantined: int
    reasons: dict[str, int]
    seconds: float
    out: str


def generation_fingerprint(spec: JobSpec) -> str:
    """What determines the content of shards: changing any of these makes old shards stale."""
    return spec_fingerprint(
        {
            "model": spec.model,
            "task": spec.task.model_dump(),
            "method": spec.method.model_dump(),
            "sampling": spec.sampling.model_dump(),
            "curate": spec.curate.model_dump(),
            "inputs_per_shard": spec.output.inputs_per_shard,
            "keep_samples": spec.output.keep_samples,
            "data": spec.data.model_dump(exclude={"eval_path"}),
            "data_content": source_fingerprint(spec),
        }
    )


@dataclass(frozen=True)
class InputPlan:
    num_inputs: int
    num_shards: int
    per_shard: dict[int, int]


def plan_inputs(spec: JobSpec) -> InputPlan:
    """First pass: how many inputs, and how many in each shard. Shards are fixed per job by the input count."""
    ids = [item.input_id for batch in iter_inputs(spec) for item in batch]
    num_shards = num_shards_for(len(ids), spec.output.inputs_per_shard)
    counts = Counter(shard_of(input_id, num_shards) for input_id in ids)
    return InputPlan(len(ids), num_shards, {shard: counts.get(shard, 0) for shard in range(num_shards)})


def input_rows(spec: JobSpec, num_shards: int) -> Iterator[dict[str, Any]]:
    """Second pass: one row per input, ready for the replicas (or, for a bad input, for the quarantine)."""
    task = get_task(spec.task.name)
    for batch in iter_inputs(spec):
        for item in batch:
            shard = shard_of(item.input_id, num_shards)
            if isinstance(item, Quarantined):
                yield quarantined_row(
                    item.input_id,
                    shard,
                    item.reason,
                    item.detail,
                    spec.method.name,
                    spec.model,
                    item.raw,
                    item.source_row,
                )
            else:
                yield _generation_row(item, shard, task)


def _generation_row(item: TaskInput, shard: int, task) -> dict[str, Any]:
    return {
        "input_id": item.input_id,
        "shard_id": shard,
        "question": item.question,
        "prompt": task.system1_prompt(item.question),
        # Structured inputs (pairwise_judge's responses, multiple_choice's options) for method templates and
        # perturbations; JSON so that every task's rows share one Arrow type.
        "fields": json.dumps(item.fields, ensure_ascii=False),
    }


def quarantined_row(
    input_id: str,
    shard: int,
    reason: str,
    detail: str,
    method: str,
    model: str,
    raw: str = "",
    source_row: int | None = None,
) -> dict[str, Any]:
    return {
        "input_id": input_id,
        "shard_id": shard,
        "status": "quarantined",
        "reason": reason,
        "detail": detail,
        "raw": raw,
        "source_row": source_row,
        "method": method,
        "model": model,
        "num_samples": 0,
    }


def _curate_batch(batch, **criterion: Any):
    """Generated rows -> the curated table, by the job's consistency criterion (engine.consistency).
    A row the replica could not run (`input_error`, e.g. too long for the context) is quarantined."""
    started = time.perf_counter()
    curated = _curate_generated_or_quarantine(batch, criterion)
    # The time travels with the batch (schema metadata survives Ray Data) for the job's stage timings.
    return curated.replace_schema_metadata({CURATE_SECONDS_KEY: str(time.perf_counter() - started).encode()})


def _curate_generated_or_quarantine(batch, criterion: dict[str, Any]):
    import pyarrow as pa
    import pyarrow.compute as pc

    if "input_error" not in batch.column_names or batch.column("input_error").null_count == batch.num_rows:
        return curate_generated(batch, **criterion)
    failed = pc.is_valid(batch.column("input_error"))
    quarantined = []
    for row in batch.filter(failed).select(["input_id", "shard_id", "prompt", "input_error"]).to_pylist():
        reason, _, detail = row["input_error"].partition(": ")
        quarantined.append(
            quarantined_row(
                row["input_id"],
                row["shard_id"],
                reason,
                detail,
                criterion["method"],
                criterion["model"],
                preview(row["prompt"]),
            )
        )
    return pa.concat_tables(
        [curate_generated(batch.filter(pc.invert(failed)), **criterion), curated_table(quarantined)]
    )


def run_generate(spec: JobSpec, force: bool = False, progress: bool = True) -> GenerateSummary:
    check_model_reference(spec.model)
    started = time.monotonic()
    plan = plan_inputs(spec)
    writer = ShardWriter.open(
        spec.out,
        plan.num_shards,
        generation_fingerprint(spec),
        plan.per_shard,
        force=force,
        keep_samples=spec.output.keep_samples,
    )
    committed = writer.committed_shards
    skipped = sum(count for shard, count in plan.per_shard.items() if shard in committed)
    tally = JobProgress(total_inputs=plan.num_inputs - skipped, skipped_inputs=skipped)
    display = ProgressDisplay(tally, enabled=progress)
    ray = _connect_quietly() if tally.total_inputs else None
    rows = input_rows(spec, plan.num_shards)
    if not spec.data.path:
        # Built-in inputs are generated in memory anyway: feed them shard by shard, so shards commit early.
        rows = iter(sorted(rows, key=lambda row: (row["shard_id"], row["input_id"])))
    blocks, block, quarantined = [], [], []
    for row in rows:
        if row["shard_id"] in committed:
            continue
        if row.get("status") == "quarantined":
            quarantined.append(row)
            if len(quarantined) == spec.generation.batch_size:
                _quarantine(writer, tally, quarantined)
                quarantined = []
            continue
        block.append(row)
        if len(block) == spec.generation.batch_size:
            blocks.append(_put_block(ray, block))  # the object store spills to disk: driver memory stays flat
            block = []
    if block:
        blocks.append(_put_block(ray, block))
    _quarantine(writer, tally, quarantined)
    display.refresh()
    stage_seconds = {
        "plan, Ray start, inputs": time.monotonic() - started,
        "curate (in Ray tasks)": 0.0,
        "shard commit + accounting (driver)": 0.0,
    }
    if blocks:
        _generate_and_commit(ray, spec, blocks, writer, tally, display, stage_seconds)
    display.close()
    finishing = time.monotonic()
    manifest = writer.finish()
    accounting = check_accounting(spec.out)
    if not accounting.ok:
        raise RuntimeError(f"accounting check failed for {spec.out}: {'; '.join(accounting.problems())}")
    write_card(spec)  # the dataset card, once the output is complete and checked
    stage_seconds["shard commit + accounting (driver)"] += time.monotonic() - finishing
    counts = manifest["counts"]
    write_metrics(
        writer.location,
        tally,
        {f"committed_{k}": v for k, v in counts.items()}
        | {
            "duplicates_dropped": writer.duplicates_dropped,
            "stage_seconds": {name: round(seconds, 3) for name, seconds in stage_seconds.items()},
        },
    )
    return GenerateSummary(
        plan.num_inputs,
        skipped,
        counts["accepted"],
        counts["rejected"],
        counts["quarantined"],
        dict(tally.reasons),
        time.monotonic() - started,
        spec.out,
    )


def _quarantine(writer: ShardWriter, tally: JobProgress, rows: list[dict[str, Any]]) -> None:
    writer.add(curated_table(rows))
    tally.add(rows)


def _connect_quietly():
    from cluster.connect import connect

    ray = connect()
    context = ray.data.DataContext.get_current()
    # One progress display, ours, with the totals users care about; Ray Data's per-operator one is noise here.
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


def _put_block(ray, rows: list[dict[str, Any]]):
    import pyarrow as pa

    return ray.put(pa.Table.from_pylist(rows))


def _generate_and_commit(
    ray,
    spec: JobSpec,
    blocks: list,
    writer: ShardWriter,
    tally: JobProgress,
    display: ProgressDisplay,
    stage_seconds: dict[str, float],
) -> None:
    """Run the pipeline over `blocks`, committing curated batches as they come; adds where the time went to
    `stage_seconds` (wall seconds, except curate: summed over its Ray tasks, which overlap generation)."""
    from actors.replica import EngineFailures
    from cluster.metrics import RayMetricsExporter

    ledger_name = f"s2d-engine-failures-{uuid.uuid4().hex[:12]}"
    ledger = ray.remote(EngineFailures).options(name=ledger_name, num_cpus=0).remote()
    with warnings.catch_warnings():
        # Ray 2.60 deprecates ray_remote_args but names no parameter for actor restarts; it is the only way to
        # bound them (Ray Data's default restarts a crashing replica forever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        generated = _replica_stage(ray, spec, blocks, ledger_name)
    curated = generated.map_batches(
        _curate_batch, batch_format="pyarrow", batch_size=None, fn_kwargs=curate_kwargs(spec)
    )
    exporter = RayMetricsExporter(job=str(spec.out))
    started = time.monotonic()
    try:
        for batch in curated.iter_batches(batch_format="pyarrow", batch_size=None):
            stage_seconds.setdefault("replica start + first batch", time.monotonic() - started)
            stage_seconds["curate (in Ray tasks)"] += float((batch.schema.metadata or {}).get(CURATE_SECONDS_KEY, 0))
            batch = batch.replace_schema_metadata(None)
            committing = time.monotonic()
            writer.add(batch)
            tally.add(batch.select(["status", "reason", "num_samples", "system2_tokens"]).to_pylist())
            display.refresh()
            exporter.update(tally.snapshot())
            stage_seconds["shard commit + accounting (driver)"] += time.monotonic() - committing
        stage_seconds["generate + curate pipeline"] = time.monotonic() - started
    except ray.exceptions.RayError as error:
        raise GenerationFailed(
            f"generation failed: {root_cause(error)}; committed shards are kept, rerun the same command to resume"
        ) from error
    finally:
        ray.kill(ledger)


class GenerationFailed(RuntimeError):
    """The replicas could not produce the job's samples (a fault restarts did not cure)."""


_EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Failed|Dead\w*)): (.+)$")


def root_cause(error: BaseException) -> str:
    """The innermost `SomeError: message` line of a Ray error's text (which embeds the remote traceback)."""
    text = str(error).splitlines()
    found = [(index, match) for index, line in enumerate(text) if (match := _EXCEPTION_LINE.match(line))]
    if not found:
        return text[0].strip() if text else type(error).__name__
    index, match = found[-1]
    name, message = match.groups()
    # pydantic and others put the substance on the indented line after "1 validation error for X".
    detail = text[index + 1].strip() if index + 1 < len(text) and text[index + 1][:1].isspace() else ""
    return f"{name}: {message.strip()}" + (f" ({detail[:300]})" if detail else "")


def _replica_stage(ray, spec: JobSpec, blocks: list, ledger_name: str):
    from actors.replica import RUNTIME_ENV, GenerationReplica
    from cluster.placement import largest_node_gpus, map_batches_placement_args, replica_placement

    placement = replica_placement(spec, largest_node_gpus(ray.nodes()))
    return ray.data.from_arrow_refs(blocks).map_batches(
        GenerationReplica,
        fn_constructor_kwargs=GenerationReplica.for_job(spec)
        | {"failure_ledger": ledger_name, "max_engine_failures": spec.generation.max_engine_failures},
        batch_size=spec.generation.batch_size,
        # Two batches per replica, running at once in two threads: the replica's async engine interleaves
        # their requests, so it stays full while one batch finishes its longest samples or moves to its
        # method's next step; a slow or restarting replica holds back at most two and idle ones take the rest.
        compute=ray.data.ActorPoolStrategy(
            min_size=spec.generation.min_replicas,
            max_size=spec.generation.max_replicas,
            max_tasks_in_flight_per_actor=BATCHES_PER_REPLICA,
            max_concurrent_calls_per_actor=BATCHES_PER_REPLICA,
            enable_true_multi_threading=True,
        ),
        # A replica process that dies is restarted and its batches retried, up to max_restarts per replica.
        max_restarts=spec.generation.max_restarts,
        max_task_retries=-1,
        runtime_env=RUNTIME_ENV,
        **map_batches_placement_args(placement),
    )
