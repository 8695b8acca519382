"""A shard written through its workers' part files (curate_and_write, then stage_shard) holds what the shard's
curated rows give directly (shard_tables): the same tables, row for row, samples included, whatever the parts'
file format; parts in Parquet (an earlier s2d, the fencing scenes) and Arrow IPC are read alike."""

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from s2d.engine.core.criteria import GeneratedInput
from s2d.engine.core.program import Chain
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import pack_generated, with_input_errors
from s2d.engine.data.inputs import INPUT_SCHEMA, INPUTS, shard_input_name
from s2d.engine.data.shard_tasks import (
    PART_SUFFIX,
    curate_and_write,
    curate_generated_or_quarantine,
    part_folder,
    stage_shard,
)
from s2d.engine.data.shards import CURATED_SCHEMA, PARTS, open_output, shard_of, shard_tables
from s2d.engine.data.storage import OutputLocation

FENCE = "e1-0123abcd"
NUM_SHARDS = 2
CRITERION = dict(task="freeform", method="system1", model="m", rule="majority", threshold=0.5)


def _generated(ids: list[str], keep_samples: bool) -> pa.Table:
    """Two samples' answers per input: agreeing (accepted), split (a tie) or unparseable (no_answer), by input."""
    answers = [["The answer is a.", "The answer is a."], ["Answer: a", "Answer: b"], ["", "no idea"]]
    generated = [
        GeneratedInput([[Chain({"think": "hmm", "answer": text}, 3 + index) for text in answers[index % 3]]])
        for index in range(len(ids))
    ]
    rows = [{"input_id": i, "shard_id": shard_of(i, NUM_SHARDS), "prompt": f"Q {i}"} for i in ids]
    errors = [None if index % 7 else "too_long: 9000 tokens" for index in range(len(ids))]  # quarantined
    ran = [generated for generated, error in zip(generated, errors) if error is None]
    packed = pack_generated([row for row, error in zip(rows, errors) if error is None], ran, keep_samples)
    return with_input_errors(packed, rows, errors)


@pytest.mark.parametrize("keep_samples", [True, False])
def test_a_shard_from_its_parts_is_the_shard_of_its_rows(tmp_path, keep_samples):
    ids = [f"input-{index}" for index in range(40)]
    location = OutputLocation.of(tmp_path)
    open_output(location, NUM_SHARDS, "fp", len(ids), force=False, keep_samples=keep_samples)
    location.makedirs(INPUTS)
    for shard in range(NUM_SHARDS):
        mine = [i for i in ids if shard_of(i, NUM_SHARDS) == shard]
        inputs = {"input_id": mine, "shard_id": [shard] * len(mine), "row": list(range(len(mine)))}
        table = pa.table({f.name: inputs.get(f.name, pa.nulls(len(mine), f.type)) for f in INPUT_SCHEMA})
        location.write_table_atomic(table.cast(INPUT_SCHEMA), INPUTS, shard_input_name(shard))
    generated = _generated(ids, keep_samples)
    # three batches, the last one repeated (a retried replica batch): its rows must count once
    for start, stop in ((0, 15), (15, 40), (15, 40)):
        counts = curate_and_write(generated.slice(start, stop - start), str(tmp_path), CRITERION, FENCE)
        assert sum(counts.column("rows").to_pylist()) == stop - start
    curated = curate_generated_or_quarantine(generated, CRITERION)
    curated = curated.select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
    for shard in range(NUM_SHARDS):
        names = location.list_files(PARTS, part_folder(shard, FENCE))
        assert names and all(name.endswith(PART_SUFFIX) for name in names)
        expected = sum(shard_of(i, NUM_SHARDS) == shard for i in ids)
        written = stage_shard(str(tmp_path), shard, NUM_SHARDS, expected, keep_samples, "job", "system1", "m", FENCE)
        assert written.arrived == expected and written.duplicates_dropped == expected - sum(
            shard_of(i, NUM_SHARDS) == shard for i in ids[:15]
        )
        rows = curated.filter(pc.equal(curated.column("shard_id"), shard))
        entry, files = shard_tables(shard, rows, keep_samples)
        assert entry.accepted and entry.rejected and entry.quarantined
        assert written.entry.model_dump(include={"accepted", "rejected", "quarantined", "samples"}) == entry.model_dump(
            include={"accepted", "rejected", "quarantined", "samples"}
        )
        for table, kind, _ in files:
            on_disk = pq.read_table(location.path(kind, written.staged), schema=table.schema)
            order = [("input_id", "ascending")] + ([("sample", "ascending")] if "sample" in table.column_names else [])
            # the parts' order (their random names) decides the rows' order within the shard: compare as sets
            assert on_disk.sort_by(order).equals(table.sort_by(order)) and table.num_rows, kind


def test_a_parquet_part_reads_as_an_arrow_one(tmp_path):
    ids = [f"input-{index}" for index in range(6)]
    location = OutputLocation.of(tmp_path)
    open_output(location, 1, "fp", len(ids), force=False, keep_samples=True)
    location.makedirs(INPUTS)
    inputs = {"input_id": ids, "shard_id": [0] * len(ids), "row": list(range(len(ids)))}
    table = pa.table({f.name: inputs.get(f.name, pa.nulls(len(ids), f.type)) for f in INPUT_SCHEMA})
    location.write_table_atomic(table.cast(INPUT_SCHEMA), INPUTS, shard_input_name(0))
    generated = pack_generated(
        [{"input_id": i, "shard_id": 0, "prompt": i} for i in ids],
        [GeneratedInput([[Chain({"answer": "Answer: x"}, 1)] * 2]) for _ in ids],
        True,
    )
    curated = curate_generated(generated, **CRITERION).select(CURATED_SCHEMA.names).cast(CURATED_SCHEMA)
    location.makedirs(PARTS, part_folder(0, FENCE))
    location.write_table_atomic(curated.slice(0, 3), PARTS, part_folder(0, FENCE), "part-old.parquet")
    curate_and_write(generated.slice(3), str(tmp_path), CRITERION, FENCE)
    written = stage_shard(str(tmp_path), 0, 1, len(ids), True, "job", "system1", "m", FENCE)
    assert written.entry.accepted == len(ids) and written.entry.samples == 2 * len(ids)
