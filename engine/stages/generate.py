"""The generate stage: inputs -> vLLM replicas (sampling) -> curation -> Parquet shards, as one Ray Data pipeline.

A shard is the unit of work; the driver plans and commits shards and never holds an input. It takes the
output's lease (s2d.engine.data.lease: one writer per `out`), counts the source, and has Ray tasks partition the
inputs by shard into `<out>/.inputs/` (s2d.engine.data.inputs), before the pipeline starts or, when the replica pool
leaves a CPU for those tasks, beside the replicas' start (s2d.engine.stages.partition). Ray Data streams the
uncommitted shards: a task loads a shard's inputs (once they are partitioned), the replica actors sample them, a
task curates each batch and writes it as a part file of its shard (s2d.engine.data.shard_tasks). The driver sees
one row of counts per part; when all of a shard's
inputs have come out, a Ray task writes the shard's tables and checks it (exactly once within the shard),
and the driver commits the entries it returns with one manifest rewrite. Every input comes out exactly
once: accepted (shards/), rejected with the criterion's reason (rejected/), or quarantined (quarantine/).
No stage runs more than a few batches ahead of the next, and Ray Data keeps the stats of a bounded number of
blocks (s2d.cluster.backpressure), so neither the driver nor the object store grows with the input.

Fault tolerance: a replica whose process dies (kill -9, OOM) is restarted by Ray and its in-flight batch
retried (the shard's writer keeps the first row of each input); an engine error restarts the replica the
same way until `generation.max_engine_failures` is reached job-wide, which fails the job with the cause.
A killed driver loses nothing committed: the rerun reuses the partitioned inputs and redoes the rest.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from s2d.engine.core.spec import JobSpec
from s2d.engine.core.tasks import TaskInput, get_task
from s2d.engine.data.accounting import accounting_from_entries
from s2d.engine.data.commits import COMMIT_INTERVAL_S, JobStalled, ShardCommits, with_ticks
from s2d.engine.data.curation import curate_kwargs
from s2d.engine.data.fingerprint import generation_fingerprint
from s2d.engine.data.inputs import INPUTS, PLAN, InputPlan, prepare_inputs, prompt_and_fields, read_units
from s2d.engine.data.lease import Lease
from s2d.engine.data.models import check_model_reference
from s2d.engine.data.ownership import (
    MANIFEST,
    ForeignOutput,
    claim_output,
    manifest_can_be_set_aside,
    set_aside_manifest,
    write_job_file,
)
from s2d.engine.data.shard_tasks import CURATE_SECONDS_KEY, curate_and_write, load_shard_inputs, quarantined_row
from s2d.engine.data.shards import PARTS, num_shards_for, open_output, shard_of
from s2d.engine.data.sources import Quarantined, iter_inputs
from s2d.engine.data.storage import OutputLocation
from s2d.engine.stages.card import write_card
from s2d.engine.stages.console import error
from s2d.engine.stages.partition import JobInputs
from s2d.engine.stages.progress import JobProgress, ProgressDisplay, write_metrics
from s2d.engine.stages.replica_pool import (
    ReplicaPool,
    leaves_cpus_for_partition,
    plan_replica_pool,
    read_reissues,
    replica_stage,
    start_straggler_coordinator,
    tasks_beside_pool,
)
from s2d.engine.stages.results import GenerateResult

# Rows that may wait between two stages, in rounds of the replica pool's in-flight work (s2d.cluster.backpressure):
# enough that no replica waits for input, few enough that driver memory does not grow with the input.
QUEUED_ROUNDS = 2
# Curation takes several replica batches per task (curation_batch_rows), within these bounds.
MAX_CURATION_ROWS = 8192
MIN_CURATION_ROUNDS = 32  # a job reports and commits at least this many times as it goes
OCCUPANCY_POLL_S = 5.0  # how often the driver asks the job's ledger how full the replicas keep their engines
# How long a step of Ray Data's executor waits for its tasks before it hands out more work (its own: 0.1 s, the
# whole of it while any other task runs). A replica of a pool of two that had finished its batches waited
# 0.13-0.18 s for the next one, 0.02-0.05 s at this value; the driver spent ~0.8 CPU-s more in a 30 s job.
EXECUTOR_WAIT_S = 0.02


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
    prompt, fields = prompt_and_fields(task, item)
    return {"input_id": item.input_id, "shard_id": shard, "question": item.question, "prompt": prompt, "fields": fields}


def run_generate(
    spec: JobSpec, force: bool = False, progress: bool = True, lease: Lease | None = None
) -> GenerateResult:
    """Generate into `spec.out` under its lease (`lease`: one the caller already holds)."""
    check_model_reference(spec.model)
    started = time.monotonic()
    if lease is not None:
        return _generate(spec, force, progress, lease, started)
    claim_output(spec.out)  # before the lease writes its file there: `out` must be s2d's (run_job claims first too)
    with Lease.acquire(spec.out) as own:
        return _generate(spec, force, progress, own, started)


def _generate(spec: JobSpec, force: bool, progress: bool, lease: Lease, started: float) -> GenerateResult:
    location = OutputLocation.of(spec.out)
    fingerprint = generation_fingerprint(spec)
    num_inputs, units = read_units(spec)
    num_shards = num_shards_for(num_inputs, spec.output.inputs_per_shard)
    manifest = _open_output(
        location, num_shards, fingerprint, num_inputs, force=force, keep_samples=spec.output.keep_samples
    )
    write_job_file(spec)  # only now: a job its manifest refused must leave the output's job.yaml as it was
    if force:
        location.delete(INPUTS)
    committed = manifest.committed
    skipped = sum(entry.inputs for entry in manifest.shards.values())
    tally = JobProgress(total_inputs=num_inputs - skipped, skipped_inputs=skipped)
    stage_seconds = {
        "plan, Ray start, inputs": 0.0,
        "curate (in Ray tasks)": 0.0,
        "shard commit + accounting (driver)": 0.0,
    }
    commits = ShardCommits(location, manifest, lease, spec, num_shards)
    first_batch_at: float | None = None
    reissues = {"reissued": 0, "won": 0}  # slow batches re-run at the job's tail, and those whose copy came first
    if len(committed) < num_shards:
        ray = _connect_quietly()
        pool = plan_replica_pool(ray, spec)
        inputs = JobInputs(
            ray,
            functools.partial(prepare_inputs, ray, spec, num_inputs, units, num_shards, fingerprint),
            beside=not location.exists(INPUTS, PLAN) and leaves_cpus_for_partition(ray, spec, pool),
        )
        stage_seconds["plan, Ray start, inputs"] = time.monotonic() - started
        display = ProgressDisplay(tally, enabled=progress)
        try:
            first_batch_at = _generate_and_commit(
                ray, spec, pool, inputs, commits, tally, display, stage_seconds, reissues
            )
        finally:
            commits.close()  # its writer processes, where the job stopped before finish()
            inputs.close()
        stage_seconds["partition inputs" + (" (beside the replicas' start)" if inputs.beside else "")] = inputs.seconds
        display.close()
        if reissues["reissued"]:
            error(
                f"s2d: {reissues['reissued']} slow batch(es) re-run by another replica at the job's tail; "
                f"{reissues['won']} of the copies came back first (generation.straggler_factor)"
            )
    finishing = time.monotonic()
    accounting = accounting_from_entries(manifest)
    if not accounting.ok:
        raise RuntimeError(f"accounting check failed for {spec.out}: {'; '.join(accounting.problems())}")
    for leftover in (PARTS, INPUTS, ".staging"):
        location.delete(leftover)
    write_card(spec)  # the dataset card, once the output is complete and checked
    stage_seconds["shard commit + accounting (driver)"] += time.monotonic() - finishing
    counts = manifest.counts
    write_metrics(
        location,
        tally,
        {f"committed_{k}": v for k, v in counts.model_dump(exclude_none=True).items()}
        | {
            "duplicates_dropped": commits.duplicates_dropped,
            "straggler_batches_reissued": reissues["reissued"],
            "straggler_reissues_won": reissues["won"],
            # From the stage's start (plan, Ray start, inputs, the replicas' start) to the first batch of results
            # reaching the driver (generated and curated); null when this run generated nothing (all committed).
            "time_to_first_batch_s": None if first_batch_at is None else round(first_batch_at - started, 3),
            "stage_seconds": {name: round(seconds, 3) for name, seconds in stage_seconds.items()},
        },
    )
    return GenerateResult(
        num_inputs,
        skipped,
        counts.accepted,
        counts.rejected,
        counts.quarantined,
        dict(tally.reasons),
        time.monotonic() - started,
        spec.out,
    )


def _open_output(location: OutputLocation, *args: Any, force: bool, keep_samples: bool):
    """open_output, where `force` also gets past a manifest.json that does not read (truncated, overwritten): it is
    moved aside (ownership.set_aside_manifest: only in an s2d output, never a newer s2d's) and the output starts
    afresh. Without `force` the refusal says so."""
    try:
        return open_output(location, *args, force, keep_samples)
    except ForeignOutput as problem:
        if not manifest_can_be_set_aside(location):
            raise
        if not force:
            raise ForeignOutput(f"{problem}; --force moves it aside and starts this output afresh") from None
        moved = set_aside_manifest(location)
        error(f"s2d: --force: {location.path(MANIFEST)} did not read ({problem}); moved it aside to {moved}")
        return open_output(location, *args, force, keep_samples)


def _connect_quietly():
    from s2d.cluster.connect import connect

    ray = connect()
    context = ray.data.DataContext.get_current()
    # One progress display, ours, with the totals users care about; Ray Data's per-operator one is noise here.
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


def _generate_and_commit(
    ray,
    spec: JobSpec,
    pool: ReplicaPool,
    inputs: JobInputs,
    commits: ShardCommits,
    tally: JobProgress,
    display: ProgressDisplay,
    stage_seconds: dict[str, float],
    reissues: dict[str, int],
) -> float | None:
    """Run the pipeline over the uncommitted shards, committing them as they finish; adds where the time went
    to `stage_seconds` (wall seconds, except curate: summed over its Ray tasks, which overlap generation), the
    replicas' engine occupancy to `tally` and the stragglers re-issued to `reissues`. Returns when
    (time.monotonic()) the first batch of results reached the driver, None if none did."""
    from s2d.actors.failures import EngineFailures
    from s2d.cluster.backpressure import driver_memory_bounded
    from s2d.cluster.compat_ray import executor_wait
    from s2d.cluster.metrics import RayMetricsExporter

    exporter = RayMetricsExporter(job=str(spec.out))
    ledger_name = f"s2d-engine-failures-{uuid.uuid4().hex[:12]}"
    ledger = ray.remote(EngineFailures).options(name=ledger_name, num_cpus=0).remote()
    coordinator = start_straggler_coordinator(ray, spec, ledger_name, pool.in_flight)
    started = time.monotonic()
    first_batch_at: float | None = None
    occupancy_read = started
    pool_rows = spec.generation.max_replicas * pool.in_flight * spec.generation.batch_size
    beside_pool = tasks_beside_pool(ray, spec, pool)  # curation tasks and shard writers at once
    # The writers start now, beside the engines: one started mid-generation slows the engines' batches.
    commits.start_writers(ray, beside_pool)
    try:
        # Partitioned beside the replicas' start: every shard not yet committed (the empty ones load nothing and
        # commit with the plan); otherwise the plan is known, and commits start now.
        plan = None if inputs.beside else _start_commits_with(ray, inputs, commits, coordinator)
        shards = commits.uncommitted_shards() if plan is None else commits.pending_shards()
        if not shards:  # every shard left has nothing to generate: committed by the plan
            commits.finish()
            return None
        # Before the datasets are built: Ray Data takes the DataContext's settings when it builds one.
        with (
            driver_memory_bounded(ray.data.DataContext.get_current(), QUEUED_ROUNDS * pool_rows),
            executor_wait(EXECUTOR_WAIT_S),
        ):
            # Rows this run generates at most (its quarantined inputs included: the plan may not be known yet).
            curation_rows = curation_batch_rows(
                spec.generation.batch_size, tally.total_inputs, QUEUED_ROUNDS * pool_rows
            )
            # No more curation tasks at once than replica batches either: Ray Data warns of a cap above its inputs.
            curation_tasks = min(beside_pool, max(1, -(-tally.total_inputs // spec.generation.batch_size)))
            parts = _pipeline_stages(
                ray, spec, pool, shards, ledger_name, commits.fence, curation_rows, curation_tasks, inputs.gate
            )
            for batch in with_ticks(parts.iter_batches(batch_format="pyarrow", batch_size=None), COMMIT_INTERVAL_S):
                if plan is None:  # partitioned beside the replicas' start: nothing is committed before the plan
                    plan = _start_commits_with(ray, inputs, commits, coordinator)
                committing = time.monotonic()
                if batch is not None:
                    if first_batch_at is None:
                        first_batch_at = committing
                        stage_seconds["replica start + first batch"] = committing - started
                    stage_seconds["curate (in Ray tasks)"] += float(
                        (batch.schema.metadata or {}).get(CURATE_SECONDS_KEY, 0)
                    )
                    for row in batch.to_pylist():
                        if commits.add_part(row["shard_id"], row["rows"], row["part"]):
                            tally.add_counts(row)
                    display.refresh()  # only when counts change: a redraw per tick is a line per second in a log
                    exporter.update(tally.snapshot())
                commits.poll()  # also between batches (a None): finished shards commit without waiting for more
                if committing - occupancy_read >= OCCUPANCY_POLL_S:
                    occupancy_read, shown = committing, tally.postfix()
                    tally.occupancy = _read_occupancy(ray, ledger) or tally.occupancy
                    if tally.postfix() != shown:  # a redraw only for a new figure: in a log, each one is a line
                        display.refresh()
                stage_seconds["shard commit + accounting (driver)"] += time.monotonic() - committing
            if plan is None:  # the pipeline ended before its first tick (every shard empty)
                plan = _start_commits_with(ray, inputs, commits, coordinator)
            commits.finish()
            stage_seconds["generate + curate pipeline"] = time.monotonic() - started
            tally.occupancy = _read_occupancy(ray, ledger) or tally.occupancy
            reissues.update(read_reissues(ray, coordinator))
            return first_batch_at
    except ray.exceptions.RayError as error:
        raise GenerationFailed(
            f"generation failed: {root_cause(error)}; committed shards are kept, rerun the same command to resume"
        ) from error
    except JobStalled as error:
        raise GenerationFailed(f"generation stopped: {error}") from None
    finally:
        ray.kill(ledger)
        if coordinator is not None:
            ray.kill(coordinator)


def _read_occupancy(ray, ledger) -> dict[str, dict[str, Any]]:
    """The replicas' engine occupancy as the ledger has it ({} if it does not answer within a second: a figure
    for the display and metrics.json, never worth stalling the commit loop or failing the job)."""
    try:
        return ray.get(ledger.occupancy.remote(), timeout=1.0)
    except Exception:  # noqa: BLE001 - any failure to read it leaves the last figures
        return {}


def curation_batch_rows(batch_size: int, num_inputs: int, queued_rows_cap: int) -> int:
    """Rows per curation task: several replica batches at once, each task's fixed cost (Ray Data's bookkeeping, a
    part file per shard it touches, the commit loop's work per result) being shared by more rows: 1M inputs at
    batch 1,024 ran at 9,738 inputs/s curating one batch per task, 11,175 four and 12,191 eight (bench/RESULTS.md).
    Bounded so that a job still reports and commits as it goes: at most 8,192 rows, and at most a 32nd of the
    job's inputs (the demo curates each batch as it comes); always whole replica batches, and never more rows than
    may wait between two stages (`queued_rows_cap`): a curation task waiting for more would stall the replicas."""
    rows = min(MAX_CURATION_ROWS, num_inputs // MIN_CURATION_ROUNDS, queued_rows_cap)
    batches = max(1, rows // batch_size)
    return batches * batch_size


def _start_commits_with(ray, inputs: JobInputs, commits: ShardCommits, coordinator) -> InputPlan:
    """Once the inputs partitioned beside the replicas' start are complete: the commits and the straggler
    coordinator learn what each shard holds."""
    plan = inputs.plan()
    commits.start(ray, plan)
    if coordinator is not None:
        coordinator.expect.remote(int(plan.valid[commits.pending_shards()].sum()))
    return plan


def load_partitioned_inputs(batch: dict, out: str, gate=None):
    """Ray Data stage: load_shard_inputs, once the job's inputs are partitioned (`gate`: the job's InputsGate when
    they are partitioned beside the replicas' start, else None: they were before the pipeline began). A task waits
    in `ray.get`, which gives its CPU back to Ray meanwhile, so the partition's tasks still get one. Only shards
    with valid inputs are read: the gate names them (a shard with none may have no input file); before the
    pipeline, pending_shards did."""
    if gate is not None:
        import ray

        with_inputs = ray.get(gate.wait.remote())
        batch = {"shard_id": [shard for shard in batch["shard_id"] if int(shard) in with_inputs]}
    yield from load_shard_inputs(batch, out)


def _pipeline_stages(
    ray,
    spec: JobSpec,
    pool: ReplicaPool,
    shards: list[int],
    ledger_name: str,
    fence: str,
    curation_rows: int,
    curation_tasks: int,
    inputs_gate=None,
):
    """The shards' inputs (once partitioned: `inputs_gate`, load_partitioned_inputs) -> the replica `pool` ->
    curation (`curation_rows` per task, `curation_tasks` at once) and part files (under the job's lease
    `fence`), as a Ray Data dataset of part counts."""
    inputs = (
        ray.data.from_items([{"shard_id": shard} for shard in shards])
        .map_batches(load_partitioned_inputs, batch_size=1, fn_kwargs={"out": spec.out, "gate": inputs_gate})
        # One block per replica batch: Ray Data hands an actor a whole block as one task, so blocks of a
        # shard would let a slow replica hold a shard's batches while the others idle.
        .repartition(target_num_rows_per_block=spec.generation.batch_size, strict=True)
    )
    generated = replica_stage(ray, spec, inputs, ledger_name, pool)
    return generated.map_batches(
        curate_and_write,
        batch_format="pyarrow",
        batch_size=curation_rows,
        compute=ray.data.TaskPoolStrategy(size=curation_tasks),
        fn_kwargs={"out": spec.out, "criterion": curate_kwargs(spec), "fence": fence},
    )


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
