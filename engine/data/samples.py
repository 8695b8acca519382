"""The samples table: every System 2 sample of every generated input, as the criterion saw it.

Pure (pyarrow, no Ray). The replica sends each sample's chain as Arrow (`steps`: list<STEP_TYPE>, in the
replica -> curation contract, s2d.engine.data.generated); curation, which extracts the answers anyway, adds them
to build the curated row's `samples` list column; the shard writer flattens that column of a complete shard
into `<out>/samples/shard-NNNNN.parquet`, committed with the shard's other tables.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

STEP_TYPE = pa.struct(
    [
        ("name", pa.string()),
        ("item", pa.int32()),  # the call's index within a fan-out step (one call per parsed item); null otherwise
        ("text", pa.string()),
    ]
)
SAMPLE_FIELDS = [
    ("variant", pa.int32()),  # perturbation: 0 is the input itself, 1.. its rewrites; null for other criteria
    ("sample", pa.int32()),  # 0..n-1 within the input (within the variant, for perturbation)
    ("steps", pa.list_(STEP_TYPE)),  # every step of the method in order; the last one holds the final answer
    ("extracted", pa.string()),  # what the method's extractor found in the final text; null: nothing
    ("answer", pa.string()),  # the task's normalised form (mapped back to the input's for a variant): the vote
    ("tokens", pa.int64()),  # generated tokens of all of the sample's LLM calls
]
SAMPLE_TYPE = pa.struct(SAMPLE_FIELDS)
SAMPLES = "samples"  # the table's folder under <out>/, and the curated rows' column that feeds it
SAMPLES_COLUMN = (SAMPLES, pa.list_(SAMPLE_TYPE))  # the curated row's column; null: samples not kept
SAMPLES_SCHEMA = pa.schema([("input_id", pa.string()), ("shard_id", pa.int32()), *SAMPLE_FIELDS])


def flatten_samples(rows: pa.Table) -> pa.Table:
    """Curated rows (with the `samples` column) -> the samples table: one row per sample."""
    column = rows.column("samples").combine_chunks() if rows.num_rows else pa.array([], SAMPLES_COLUMN[1])
    owners = pc.list_parent_indices(column)
    flat = pc.list_flatten(column)
    columns = {"input_id": rows.column("input_id").take(owners), "shard_id": rows.column("shard_id").take(owners)}
    columns |= {name: flat.field(name) for name, _ in SAMPLE_FIELDS}
    return pa.table(columns).cast(SAMPLES_SCHEMA)


def sample_count_problems(inputs: pa.Table, samples: pa.Table) -> list[str]:
    """What breaks "every generated input has exactly its num_samples samples, each once" in committed tables.
    `inputs`: input_id, num_samples of the accepted and rejected rows; `samples`: input_id, variant, sample."""
    problems = []
    keys = ["input_id", "variant", "sample"]
    distinct = samples.group_by(keys).aggregate([]).num_rows if samples.num_rows else 0
    if distinct != samples.num_rows:
        problems.append(f"{samples.num_rows - distinct} samples appear more than once")
    per_input = (
        samples.group_by("input_id").aggregate([("sample", "count")])
        if samples.num_rows
        else pa.table({"input_id": pa.array([], pa.string()), "sample_count": pa.array([], pa.int64())})
    )
    joined = inputs.join(per_input, "input_id", join_type="full outer")
    found = pc.fill_null(joined.column("sample_count"), 0)
    expected = pc.fill_null(joined.column("num_samples"), 0)
    wrong = joined.filter(pc.not_equal(found, expected))
    if wrong.num_rows:
        first = wrong.slice(0, 1).to_pylist()[0]
        problems.append(
            f"{wrong.num_rows} inputs do not have their num_samples samples (first: {first['input_id']} "
            f"has {first['sample_count'] or 0}, expected {first['num_samples'] or 0})"
        )
    return problems
