"""The generate stage: inputs -> vLLM replicas (sampling) -> curation -> Parquet shards, as one Ray Data pipeline.

Ray Data streams input blocks through a pool of replica actors and a curation stage; the driver
consumes curated rows and commits each shard when its last input arrives. Every input comes out
exactly once, either accepted (shards/) or rejected with its reason (rejected/).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.curate import curate_row
from engine.models import check_model_reference
from engine.progress import JobProgress, ProgressDisplay, write_metrics
from engine.shards import ShardWriter, num_shards_for, shard_of, spec_fingerprint
from engine.spec import JobSpec
from engine.tasks import TaskInput, get_task


@dataclass(frozen=True)
class GenerateSummary:
    inputs: int
    skipped_committed: int
    accepted: int
    rejected: int
    reasons: dict[str, int]
    seconds: float
    out: Path


def generation_fingerprint(spec: JobSpec) -> str:
    """What determines the content of shards: changing any of these makes old shards stale."""
    return spec_fingerprint({
        "model": spec.model, "task": spec.task.model_dump(), "method": spec.method.model_dump(),
        "sampling": spec.sampling.model_dump(), "curate": spec.curate.model_dump(),
        "inputs_per_shard": spec.output.inputs_per_shard,
    })


def input_rows(spec: JobSpec, inputs: list[TaskInput], num_shards: int) -> list[dict[str, Any]]:
    task = get_task(spec.task.name)
    rows = [
        {"input_id": item.input_id, "shard_id": shard_of(item.input_id, num_shards),
         "question": item.question, "prompt": task.system1_prompt(item.question)}
        for item in inputs
    ]
    # Feed shard by shard so shards complete early and the driver holds few partial shards.
    return sorted(rows, key=lambda row: (row["shard_id"], row["input_id"]))


def _curate_batch(batch, *, task: str, threshold: float, method: str, model: str):
    import pyarrow as pa

    rows = [curate_row(row, task=task, threshold=threshold, method=method, model=model) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows)


def run_generate(spec: JobSpec, force: bool = False, progress: bool = True) -> GenerateSummary:
    from cluster.connect import connect
    from cluster.metrics import RayMetricsExporter
    from cluster.placement import largest_node_gpus, map_batches_placement_args, replica_placement
    from actors.replica import GenerationReplica

    check_model_reference(spec.model)
    started = time.monotonic()
    out = spec.out_path
    inputs = get_task(spec.task.name).generate(spec.task.num_inputs, spec.task.seed, "train")
    num_shards = num_shards_for(len(inputs), spec.output.inputs_per_shard)
    rows = input_rows(spec, inputs, num_shards)
    expected = Counter(row["shard_id"] for row in rows)
    writer = ShardWriter.open(out, num_shards, generation_fingerprint(spec),
                              {shard: expected.get(shard, 0) for shard in range(num_shards)}, force=force)
    pending = [row for row in rows if row["shard_id"] not in writer.committed_shards]
    skipped = len(rows) - len(pending)
    tally = JobProgress(total_inputs=len(pending), skipped_inputs=skipped)

    if pending:
        ray = connect()
        context = ray.data.DataContext.get_current()
        # One progress display, ours, with the totals users care about; Ray Data's per-operator one is noise here.
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        placement = replica_placement(spec, largest_node_gpus(ray.nodes()))
        dataset = ray.data.from_items(pending, override_num_blocks=max(1, len(pending) // spec.generation.batch_size))
        generated = dataset.map_batches(
            GenerationReplica,
            fn_constructor_kwargs=GenerationReplica.for_job(spec),
            batch_size=spec.generation.batch_size,
            # Two batches in flight per replica: one computing, one queued, so a replica never idles between
            # batches, while a slow or restarting replica holds back at most two and idle ones take the rest.
            compute=ray.data.ActorPoolStrategy(min_size=spec.generation.min_replicas,
                                               max_size=spec.generation.max_replicas,
                                               max_tasks_in_flight_per_actor=2),
            **map_batches_placement_args(placement),
        )
        curated = generated.map_batches(
            _curate_batch, batch_format="pyarrow", batch_size=None,
            fn_kwargs={"task": spec.task.name, "threshold": spec.curate.threshold,
                       "method": spec.method.name, "model": spec.model},
        )
        display = ProgressDisplay(tally, enabled=progress)
        exporter = RayMetricsExporter(job=str(out))
        for batch in curated.iter_batches(batch_format="pyarrow", batch_size=None):
            batch_rows = batch.to_pylist()
            writer.add(batch_rows)
            tally.add(batch_rows)
            display.refresh()
            exporter.update(tally.snapshot())
        display.close()
    manifest = writer.finish()
    counts = manifest["counts"]
    if counts["accepted"] + counts["rejected"] != len(rows):
        raise RuntimeError(f"accounting: {counts['accepted']} accepted + {counts['rejected']} rejected != {len(rows)} inputs")
    write_metrics(out, tally, {"committed_accepted": counts["accepted"], "committed_rejected": counts["rejected"]})
    return GenerateSummary(len(rows), skipped, counts["accepted"], counts["rejected"], dict(tally.reasons),
                           time.monotonic() - started, out)
