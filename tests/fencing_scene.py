"""The setting of the fencing tests (tests/unit/test_commits.py, tests/integration/test_fencing.py): an output of two
shards on real files, its partitioned inputs, and curated part files as a job's workers write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from s2d.engine.core.spec import parse_spec
from s2d.engine.data.inputs import INPUT_SCHEMA, INPUTS, InputPlan, shard_input_name
from s2d.engine.data.shard_tasks import part_folder
from s2d.engine.data.shards import KINDS, PARTS, curated_table, open_output, shard_of
from s2d.engine.data.storage import OutputLocation

NUM_SHARDS = 2
PER_SHARD = 2


def ids_by_shard() -> dict[int, list[str]]:
    """PER_SHARD input ids of each shard (ids hash to their shard)."""
    found: dict[int, list[str]] = {shard: [] for shard in range(NUM_SHARDS)}
    for index in range(1000):
        input_id = f"q{index}"
        shard = shard_of(input_id, NUM_SHARDS)
        if len(found[shard]) < PER_SHARD:
            found[shard].append(input_id)
    return found


def open_scene(out: Path):
    """(location, spec, plan): the output opened (its manifest written) and its inputs partitioned."""
    location = OutputLocation.of(out)
    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "task": {"name": "last_letter_one", "num_inputs": NUM_SHARDS * PER_SHARD},
            "output": {"keep_samples": False},
            "out": str(out),
        }
    )
    open_output(location, NUM_SHARDS, "fp", NUM_SHARDS * PER_SHARD, force=False, keep_samples=False)
    location.makedirs(INPUTS)
    for shard, ids in ids_by_shard().items():
        rows = [{"input_id": i, "shard_id": shard, "row": n, "question": i, "prompt": i} for n, i in enumerate(ids)]
        location.write_table_atomic(pa.Table.from_pylist(rows, schema=INPUT_SCHEMA), INPUTS, shard_input_name(shard))
    plan = InputPlan(NUM_SHARDS * PER_SHARD, NUM_SHARDS, np.full(NUM_SHARDS, PER_SHARD), np.zeros(NUM_SHARDS, int))
    return location, spec, plan


def write_part(location: OutputLocation, fence: str, shard: int, answer: str, name: str) -> str:
    """A worker's part file of `shard` (every input accepted with `answer`), under `fence`, as curate_and_write
    writes it; returns its name."""
    rows = [
        {"input_id": i, "shard_id": shard, "status": "accepted", "prompt": i, "answer": answer, "num_samples": 1}
        for i in ids_by_shard()[shard]
    ]
    location.makedirs(PARTS, part_folder(shard, fence))
    location.write_table_atomic(curated_table(rows), PARTS, part_folder(shard, fence), name)
    return name


def visible_files(out: Path) -> dict[str, list[str]]:
    """What a reader globbing the table folders sees (the card's `shard-*.parquet`; hidden names are not)."""
    return {kind: sorted(p.name for p in (out / kind).glob("shard-*.parquet")) for kind in KINDS}
