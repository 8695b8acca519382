"""The samples table: every System 2 sample of every generated input, as the criterion saw it.

Pure (pyarrow, no Ray). The replica sends each sample's chain as JSON (`sample_steps`, one string per sample:
its step name -> text, or a list of texts for a fan-out step); curation, which extracts the answers anyway,
turns them into the curated row's `samples` list column; the shard writer flattens that column of a
complete shard into `<out>/samples/shard-NNNNN.parquet`, committed with the shard's other tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

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


_CHAIN_ENCODER = json.JSONEncoder(ensure_ascii=False)  # one encoder: json.dumps with options builds one per call


def chain_json(steps: dict[str, str | list[str]]) -> str:
    """One sample's chain as the replica sends it (JSON keeps the step order)."""
    return _CHAIN_ENCODER.encode(steps)


def samples_column(
    chains: Sequence[Sequence[str] | None],
    extracted: Sequence[str | None],
    answers: Sequence[str | None],
    tokens: Sequence[int],
    per_variant: int | None = None,
) -> pa.Array:
    """The `samples` column of a batch of curated rows: per input, its chains (None: no samples) in generation
    order, variant by variant with `per_variant` samples each for perturbation. `extracted`, `answers` and
    `tokens` hold one value per sample of the whole batch, in the same order.

    Built column by column (offsets and flat arrays, no dict per sample): this runs on every sample of a job."""
    input_offsets, valid = [0], []
    step_offsets, names, items, texts = [0], [], [], []
    variants: list[int | None] = []
    indices: list[int] = []
    for encoded in chains:
        valid.append(encoded is not None)
        for index, chain in enumerate(encoded or ()):
            for name, text in json.loads(chain).items():
                if isinstance(text, list):
                    names.extend([name] * len(text))
                    items.extend(range(len(text)))
                    texts.extend(text)
                else:
                    names.append(name)
                    items.append(None)
                    texts.append(text)
            step_offsets.append(len(names))
            variants.append(None if per_variant is None else index // per_variant)
            indices.append(index if per_variant is None else index % per_variant)
        input_offsets.append(len(indices))
    count = len(indices)
    steps = pa.ListArray.from_arrays(
        pa.array(step_offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(names, pa.string()), pa.array(items, pa.int32()), pa.array(texts, pa.string())],
            fields=list(STEP_TYPE),
        ),
    )
    fields = dict(SAMPLE_FIELDS)
    samples = pa.StructArray.from_arrays(
        [
            pa.array(variants, fields["variant"]),
            pa.array(indices, fields["sample"]),
            steps,
            pa.array(list(extracted[:count]), fields["extracted"]),
            pa.array(list(answers[:count]), fields["answer"]),
            pa.array([int(value) for value in tokens[:count]], fields["tokens"]),
        ],
        fields=[pa.field(name, kind) for name, kind in SAMPLE_FIELDS],
    )
    return pa.ListArray.from_arrays(
        pa.array(input_offsets, pa.int32()), samples, mask=pa.array([not ok for ok in valid], pa.bool_())
    ).cast(SAMPLES_COLUMN[1])


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
