"""Curation throughput: s2d's majority vote + shard write vs a bare pyarrow group_by computing the same votes.

    .venv/bin/python bench/curate.py            # ~3 minutes on 2 cores; --inputs for a smaller run
    .venv/bin/python bench/curate.py --inputs-per-shard 1000   # smaller shards: more files per sample

A synthetic generate-stage output of 1.25M inputs x 8 samples (10M samples): content-hash input_ids (as
`s2d.engine.core.tasks.base.make_input_id` makes them), shards of `output.inputs_per_shard` inputs by `shard_of`,
last-letter style prompts, token counts, and answers drawn per input around a "true" answer with a
per-input accuracy, so that accepts, ties, below-threshold and all-unparseable inputs all occur. Answers
are given already extracted: extraction (a regex per sample) is the one per-sample Python step of
curation, and it is not what this compares.

Each side runs in its own fresh process on the same Parquet file, so that each one's peak memory is its
own; loading that file is not timed.
- s2d: the pipeline's driver loop over curated batches of `--batch-inputs` inputs, in shard order as the
  pipeline feeds built-in inputs: `s2d.engine.data.curation.curate_majority` (the function `curate_generated`
  calls after extraction) then `ShardWriter.add`, writing and committing real shards (Parquet files,
  fsync, manifest) under a temporary folder; then `ShardWriter.finish`.
- pyarrow: the long table (input_id, answer) of all samples; `group_by(["input_id", "answer"])` counts the
  parsed answers, then the top answer of each input (most votes, ties by answer, as s2d orders them) by a
  sort and an ordered `group_by("input_id")` first. No threshold, no ties, no output: only the votes.
The votes s2d committed (accepted: answer and votes; rejected: the first of answer_counts) are checked
equal to pyarrow's for every input. Throughput per core divides by the process's CPU time (all threads).
The last line is the headline: s2d time / pyarrow time, and s2d's samples/s per core.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2d.engine.core.spec import OutputSpec  # noqa: E402 - after the path set-up

N, THRESHOLD = 8, 0.5
VOCABULARY = np.array(
    [
        "".join(letters)
        for letters in np.random.default_rng(1).choice(list("abcdefghijklmnopqrstuvwxyz"), size=(5000, 4))
    ]
)


def synthetic(num_inputs: int, inputs_per_shard: int, seed: int = 0) -> pa.Table:
    """One row per input: input_id, shard_id, prompt, answers (list of N, null = unparseable), and samples as the
    replica -> curation contract carries them (s2d.engine.data.generated; here only their tokens are filled in)."""
    from s2d.engine.core.tasks.base import make_input_id
    from s2d.engine.data.generated import GENERATED_SAMPLE_TYPE
    from s2d.engine.data.shards import num_shards_for, shard_of

    rng = np.random.default_rng(seed)
    words = VOCABULARY[rng.integers(0, len(VOCABULARY), size=(num_inputs, 4))]
    questions = [" ".join(row) for row in words.tolist()]
    input_ids = [make_input_id("last_letter", question) for question in questions]
    num_shards = num_shards_for(num_inputs, inputs_per_shard)
    shard_ids = [shard_of(input_id, num_shards) for input_id in input_ids]
    prompts = [f'Take the last letters of the words in "{question}" and concatenate them.' for question in questions]
    # Each input: a true answer, a per-input accuracy, two likely distractors, some unparseable samples.
    truth = rng.integers(0, len(VOCABULARY), size=(num_inputs, 1))
    distractors = rng.integers(0, len(VOCABULARY), size=(num_inputs, 2))
    accuracy = rng.choice([0.2, 0.4, 0.5, 0.6, 0.8, 0.95], size=(num_inputs, 1))
    draw = rng.random((num_inputs, N))
    codes = np.where(
        draw < accuracy, truth, distractors[np.arange(num_inputs)[:, None], rng.integers(0, 2, (num_inputs, N))]
    )
    unparseable = rng.random((num_inputs, N)) < rng.choice(
        [0.0, 0.1, 0.3, 1.0], p=[0.5, 0.3, 0.15, 0.05], size=(num_inputs, 1)
    )
    answers = pa.DictionaryArray.from_arrays(
        pa.array(codes.ravel().astype(np.int32), mask=unparseable.ravel()), pa.array(VOCABULARY)
    ).cast(pa.string())
    offsets = pa.array(np.arange(0, num_inputs * N + 1, N, dtype=np.int32))
    tokens = pa.array(rng.integers(20, 200, size=num_inputs * N))
    samples = pa.StructArray.from_arrays(
        [tokens if field.name == "tokens" else pa.nulls(num_inputs * N, field.type) for field in GENERATED_SAMPLE_TYPE],
        fields=list(GENERATED_SAMPLE_TYPE),
    )
    table = pa.table(
        {
            "input_id": input_ids,
            "shard_id": pa.array(shard_ids, pa.int32()),
            "prompt": prompts,
            "answers": pa.ListArray.from_arrays(offsets, answers),
            "samples": pa.ListArray.from_arrays(offsets, samples),
        }
    )
    # The pipeline feeds built-in inputs shard by shard (s2d.engine.stages.generate.run_generate).
    return table.sort_by([("shard_id", "ascending"), ("input_id", "ascending")])


def run_s2d(table: pa.Table, out: Path, batch_inputs: int) -> None:
    from s2d.engine.data.curation import curate_majority
    from s2d.engine.data.shards import ShardWriter

    num_shards = pc.max(table.column("shard_id")).as_py() + 1
    per_shard = np.bincount(table.column("shard_id").to_numpy(), minlength=num_shards)
    writer = ShardWriter.open(out, num_shards, "bench", dict(enumerate(per_shard.tolist())))
    for start in range(0, table.num_rows, batch_inputs):
        batch = table.slice(start, batch_inputs)
        writer.add(
            curate_majority(batch, batch.column("answers"), method="bench", model="synthetic", threshold=THRESHOLD)
        )
    writer.finish()


def committed_votes(out: Path) -> pa.Table:
    """(input_id, top answer, its votes) from committed output; inputs without a parsed answer are left out."""
    from s2d.engine.data.shards import read_committed

    accepted, rejected = read_committed(out), read_committed(out, "rejected")
    parsed = rejected.filter(pc.greater(pc.list_value_length(rejected.column("answer_counts")), 0))
    top = pc.list_element(parsed.column("answer_counts"), 0)
    return pa.concat_tables(
        [
            accepted.select(["input_id", "answer", "votes"]),
            pa.table(
                {
                    "input_id": parsed.column("input_id"),
                    "answer": pc.struct_field(top, "answer"),
                    "votes": pc.struct_field(top, "votes"),
                }
            ),
        ]
    ).sort_by("input_id")


def run_pyarrow(table: pa.Table) -> pa.Table:
    counts = (
        table.filter(pc.is_valid(table.column("answer")))
        .group_by(["input_id", "answer"])
        .aggregate([([], "count_all")])
    )
    ranked = counts.sort_by([("input_id", "ascending"), ("count_all", "descending"), ("answer", "ascending")])
    top = ranked.group_by("input_id", use_threads=False).aggregate([("answer", "first"), ("count_all", "first")])
    return pa.table(
        {
            "input_id": top.column("input_id"),
            "answer": top.column("answer_first"),
            "votes": top.column("count_all_first"),
        }
    ).sort_by("input_id")


def long_form(table: pa.Table) -> pa.Table:
    """One row per sample: what a plain pyarrow pipeline would hold."""
    answers = table.column("answers").combine_chunks()
    parents = pc.list_parent_indices(answers)
    return pa.table({"input_id": table.column("input_id").take(parents), "answer": answers.flatten()})


def side(name: str, data: Path, result: Path, batch_inputs: int, threads: int | None) -> None:
    """One side, in this process: load (untimed), run (timed), report JSON on stdout."""
    import psutil

    import s2d.engine.data.curation  # noqa: F401 - imports are not what is measured
    import s2d.engine.data.shards  # noqa: F401

    if threads:
        pa.set_cpu_count(threads)
    table = pq.read_table(data)
    if name == "pyarrow":
        table = long_form(table)
    samples = int(pc.sum(pc.list_value_length(pq.read_table(data, columns=["answers"]).column("answers"))).as_py())
    loaded_rss = psutil.Process().memory_info().rss
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(dir=result.parent) as out:
        if name == "s2d":
            run_s2d(table, Path(out) / "run", batch_inputs)
        else:
            votes = run_pyarrow(table)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        written = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
        if name == "s2d":
            votes = committed_votes(Path(out) / "run")
    pq.write_table(votes, result)
    print(
        json.dumps(
            {
                "side": name,
                "samples": samples,
                "wall_s": wall,
                "cpu_s": cpu,
                "threads": pa.cpu_count(),
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "loaded_rss": loaded_rss,
                "arrow_peak": pa.default_memory_pool().max_memory(),
                "written_bytes": written,
            }
        )
    )


def spawn(name: str, data: Path, result: Path, batch_inputs: int, threads: int | None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--side",
        name,
        "--data",
        str(data),
        "--result",
        str(result),
        "--batch-inputs",
        str(batch_inputs),
    ] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} side failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_250_000)
    parser.add_argument("--batch-inputs", type=int, default=8192, help="inputs per curated batch (s2d side)")
    parser.add_argument("--threads", type=int, default=None, help="pyarrow.set_cpu_count on both sides")
    parser.add_argument(
        "--inputs-per-shard",
        type=int,
        default=OutputSpec().inputs_per_shard,
        help="output.inputs_per_shard (default: the job spec's); files written = 3 per shard",
    )
    parser.add_argument("--side", choices=["s2d", "pyarrow"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return side(args.side, args.data, args.result, args.batch_inputs, args.threads)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="s2d-bench-curate-") as folder:
        data = Path(folder) / "generated.parquet"
        pq.write_table(synthetic(args.inputs, args.inputs_per_shard), data)
        print(
            f"synthetic table: {args.inputs:,} inputs x {N} = {args.inputs * N:,} samples, "
            f"{args.inputs_per_shard} inputs per shard, built in {time.perf_counter() - started:.0f}s"
        )
        results = {}
        for name in ("pyarrow", "s2d"):
            results[name] = spawn(name, data, Path(folder) / f"{name}.parquet", args.batch_inputs, args.threads)
        ours, theirs = (pq.read_table(Path(folder) / f"{name}.parquet") for name in ("s2d", "pyarrow"))
        assert ours.equals(theirs), "s2d's committed votes differ from pyarrow's"
        print(f"votes agree: top answer and its count for all {ours.num_rows:,} inputs with a parsed answer")
    for name, label in (("pyarrow", "pyarrow group_by (votes only)"), ("s2d", "s2d vote + shard write")):
        r = results[name]
        print(
            f"{label:32s} {r['wall_s']:6.2f} s  {r['samples'] / r['wall_s'] / 1e6:5.2f} M samples/s  "
            f"cpu {r['cpu_s']:6.2f} s = {r['cpu_s'] / r['wall_s']:.2f} cores busy of {r['threads']} arrow threads "
            f"-> {r['samples'] / r['cpu_s'] / 1e6:5.2f} M samples/s/core  "
            f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB (input loaded: {r['loaded_rss'] / 2**30:.2f} GiB), "
            f"arrow pool peak {r['arrow_peak'] / 2**30:.2f} GiB"
            + (f", wrote {r['written_bytes'] / 2**20:.0f} MiB" if name == "s2d" else "")
        )
    s2d, bare = results["s2d"], results["pyarrow"]
    print(
        f"s2d/pyarrow time: {s2d['wall_s'] / bare['wall_s']:.2f}x (target <= 2x); "
        f"s2d {s2d['samples'] / s2d['cpu_s'] / 1e6:.2f} M samples/s/core (target >= 1M)"
    )


if __name__ == "__main__":
    main()
