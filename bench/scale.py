"""Internet-scale generate, its data path: driver memory, object store and throughput at 1M and 5M inputs.

    s2d-timed .venv/bin/python bench/scale.py                      # 1M and 5M inputs, this checkout
    .venv/bin/python bench/scale.py --code /tmp/main --sizes 1000000   # the same on another checkout (today's code)
    .venv/bin/python bench/scale.py --keep-samples --sizes 1000000     # with output.keep_samples (8 rows per input)

The real `s2d generate` pipeline (`s2d.engine.stages.generate.run_generate`: lease, partitioning, Ray Data, curation,
shard writing and commits, accounting, dataset card) on a user Parquet file of small inputs, with one thing
replaced: the replica is a STAND-IN that answers instantly (`StandInReplica`: the Arrow contract of
`s2d.actors.replica.GenerationReplica`, n sample texts, token counts and chains per input), so what is measured
is the data path, not vLLM. Each size runs in a fresh driver process (its peak RSS is its own), on an
embedded local Ray with 6 logical CPUs over this machine's cores (`--cpus`): two stand-in replicas at 1 CPU
each, and Ray Data reserves a task's CPU for each of the three task stages while it is alive (loading,
splitting into batches, curation; s2d.cluster.backpressure keeps them all alive to the end), which leaves one more
for curation. With 4, curation runs one task at a time and the data path halves. A sampler reads the head
node's object store (plasma) use and spilled bytes every second (`ray memory --stats-only`), and the driver's
RSS. The last lines are the figures, then both memories over time (a peak that plateaus is bounded; one that
climbs grows with the input).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 8
WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano", "ocean", "zebra"]


class StandInReplica:
    """STAND-IN for s2d.actors.replica.GenerationReplica: the same constructor interface (`for_job`) and contract
    (s2d.engine.data.generated.GENERATED_SCHEMA, majority rule, packed by the replica's own `pack_generated`),
    answering at once without a model."""

    def __init__(self, n: int, keep_samples: bool, **_: object):
        self.n, self.keep_samples = n, keep_samples

    @classmethod
    def for_job(cls, spec, max_lora_rank=None) -> dict:
        return {"n": spec.sampling.n, "keep_samples": spec.output.keep_samples}

    def __call__(self, batch: dict):
        from s2d.engine.core.criteria import GeneratedInput
        from s2d.engine.core.program import Chain
        from s2d.engine.data.generated import pack_generated

        generated = []
        for question in batch["question"]:
            word = str(question).rsplit(" ", 1)[-1].rstrip("?")
            # Mostly the right last letter (accepted); for one word in four, split votes (rejected as a tie).
            wrong_every = 2 if len(word) % 4 == 0 else 4
            answers = [word[-1] if sample % wrong_every else word[0] for sample in range(self.n)]
            generated.append(GeneratedInput([[Chain({"answer": f"The answer is {answer}."}, 6) for answer in answers]]))
        rows = [
            {"input_id": input_id, "shard_id": shard, "prompt": prompt}
            for input_id, shard, prompt in zip(batch["input_id"], batch["shard_id"], batch["prompt"])
        ]
        return pack_generated(rows, generated, self.keep_samples)


def make_inputs(path: Path, count: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, pa.schema([("question", pa.string())])) as writer:
        for start in range(0, count, 1_000_000):
            stop = min(count, start + 1_000_000)
            questions = [f"What is the last letter of {WORDS[i % 10]}{i}x?" for i in range(start, stop)]
            writer.write_table(pa.table({"question": questions}), row_group_size=250_000)


class StoreSampler(threading.Thread):
    """Every `interval` seconds: this Ray session's plasma use and spilled bytes, and this driver's RSS (a
    time series, so that a peak can be told apart from growth: `curve`)."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval, self.stop, self.peak_mib, self.spilled_mib = interval, threading.Event(), 0.0, 0.0
        self.series: list[tuple[float, float, float]] = []  # (seconds, driver RSS MiB, plasma MiB)

    def run(self) -> None:
        from ray._private.internal_api import memory_summary

        started = time.monotonic()
        while not self.stop.wait(self.interval):
            try:
                text = memory_summary(stats_only=True)
            except Exception:  # noqa: BLE001 - a sampling miss, not a result
                continue
            plasma = 0.0
            if used := re.search(r"Plasma memory usage (\d+) MiB", text):
                plasma = float(used.group(1))
                self.peak_mib = max(self.peak_mib, plasma)
            if spilled := re.search(r"Spilled (\d+) MiB", text):
                self.spilled_mib = max(self.spilled_mib, float(spilled.group(1)))
            self.series.append((round(time.monotonic() - started, 1), _rss_mib(), plasma))

    def curve(self, points: int = 10) -> list[tuple[float, float, float]]:
        """The series at `points` evenly spaced moments (the last sample included)."""
        if not self.series:
            return []
        step = max(1, len(self.series) // points)
        return self.series[step - 1 :: step][: points - 1] + [self.series[-1]]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    return 0.0


def child(args: argparse.Namespace) -> None:
    """One job in this process: patch in the stand-in, run `run_generate`, print one JSON line of figures."""
    sys.path.insert(0, args.code)
    import ray

    import s2d.actors.replica as replica_module
    from s2d.engine.core.spec import load_spec
    from s2d.engine.stages.generate import run_generate

    replica_module.GenerationReplica = StandInReplica  # run_generate imports it from there at call time
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    overrides = [
        f"data.path={args.data}",
        "task.name=freeform",
        "data.columns.input=question",
        "method.name=system1",
        f"sampling.n={N_SAMPLES}",
        "curate.threshold=0.5",
        f"generation.batch_size={args.batch_size}",
        "generation.replicas=2",
        "output.inputs_per_shard=5000",
        f"output.keep_samples={str(args.keep_samples).lower()}",
        f"out={args.out}",
    ]
    spec = load_spec(Path(args.code) / "configs" / "demo.yaml", overrides)
    rss_before_job = _rss_mib()
    sampler = StoreSampler(interval=0.5)
    sampler.start()
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start(8)
        first = threading.Timer(args.trace_memory, lambda: setattr(sampler, "first", tracemalloc.take_snapshot()))
        first.start()
    started = time.monotonic()
    summary = run_generate(spec, progress=False)
    seconds = time.monotonic() - started
    if args.trace_memory and getattr(sampler, "first", None) is not None:
        _print_growth(sampler.first, tracemalloc.take_snapshot())
    import ctypes

    rss_at_end = _rss_mib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what of the RSS is freed memory glibc kept, not live objects
    rss_trimmed = _rss_mib()
    sampler.stop.set()
    sampler.join()
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    print(
        json.dumps(
            {
                "inputs": summary.inputs,
                "accepted": summary.accepted,
                "rejected": summary.rejected,
                "seconds": round(seconds, 1),
                "inputs_per_s": round(summary.inputs / seconds),
                "pipeline_inputs_per_s": round(
                    summary.inputs / metrics["stage_seconds"].get("generate + curate pipeline", seconds)
                ),
                "stage_seconds": metrics["stage_seconds"],
                "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "object_store_peak_mib": sampler.peak_mib,
                "spilled_mib": sampler.spilled_mib,
                "curve_s_rss_plasma_mib": sampler.curve(),
                "driver_rss_before_job_mib": rss_before_job,
                "driver_rss_at_end_mib": rss_at_end,
                "driver_rss_after_malloc_trim_mib": rss_trimmed,
            }
        )
    )
    ray.shutdown()


def _print_growth(first, last) -> None:
    """Where the driver's Python heap grew between two snapshots (--trace-memory), largest first."""
    for stat in last.compare_to(first, "traceback")[:12]:
        print(f"grew {stat.size_diff / 2**20:+.1f} MiB in {stat.count_diff:+,} blocks at:", file=sys.stderr)
        for line in stat.traceback.format()[-8:]:
            print(f"    {line}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000", help="input counts, comma-separated")
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose engine runs (default: this one)")
    parser.add_argument("--batch-size", type=int, default=1024, help="generation.batch_size (inputs per call)")
    parser.add_argument("--cpus", type=int, default=6, help="logical CPUs of the embedded Ray (see the top)")
    parser.add_argument(
        "--keep-samples", action="store_true", help="also write every sample (output.keep_samples; 8x the rows)"
    )
    parser.add_argument(
        "--trace-memory",
        type=float,
        default=0,
        metavar="S",
        help="trace the driver's Python allocations and print where they grew between S seconds in and the end",
    )
    parser.add_argument("--work", default=os.environ.get("S2D_SCALE_DIR", tempfile.gettempdir() + "/s2d-scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in [int(size) for size in args.sizes.split(",")]:
        data = work / f"inputs-{size}.parquet"
        if not data.exists():
            make_inputs(data, size)
        out = work / f"out-{size}-{Path(args.code).name}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--code",
            args.code,
            "--data",
            str(data),
            "--out",
            str(out),
        ]
        command += ["--batch-size", str(args.batch_size), "--cpus", str(args.cpus)]
        command += ["--keep-samples"] if args.keep_samples else []
        command += ["--trace-memory", str(args.trace_memory)]
        env = os.environ | {"PYTHONPATH": args.code}
        # cwd: Ray puts the driver's working directory on its workers' path, so they import the same checkout
        done = subprocess.run(command, env=env, cwd=args.code, capture_output=True, text=True)
        if args.trace_memory and "grew " in done.stderr:
            print(done.stderr[done.stderr.find("grew ") :], file=sys.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {size}: the job failed (exit {done.returncode})")
        results[size] = json.loads(lines[-1])
        print(f"{size}: {lines[-1]}", flush=True)
        subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        f"\ncode: {args.code}; stand-in replica (instant answers), n={N_SAMPLES}, batch {args.batch_size}, "
        f"keep_samples {args.keep_samples}"
    )
    print("| inputs | wall | inputs/s (job) | inputs/s (pipeline) | driver peak RSS | object store peak | spilled |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, found in results.items():
        print(
            f"| {size:,} | {found['seconds']:.0f} s | {found['inputs_per_s']:,} | {found['pipeline_inputs_per_s']:,} "
            f"| {found['driver_peak_rss_mib']} MiB | {found['object_store_peak_mib']:.0f} MiB "
            f"| {found['spilled_mib']:.0f} MiB |"
        )
    for size, found in results.items():
        curve = ", ".join(f"{t:.0f} s {rss:.0f}/{plasma:.0f}" for t, rss, plasma in found["curve_s_rss_plasma_mib"])
        print(f"{size:,} over time (driver RSS / object store, MiB): {curve}")
        print(
            f"{size:,} driver RSS: {found['driver_rss_before_job_mib']:.0f} MiB before the job, "
            f"{found['driver_rss_at_end_mib']:.0f} at its end, {found['driver_rss_after_malloc_trim_mib']:.0f} "
            "after malloc_trim (the rest is live memory)"
        )
    if len(results) >= 2:
        sizes = sorted(results)
        ratio = results[sizes[-1]]["driver_peak_rss_mib"] / results[sizes[0]]["driver_peak_rss_mib"]
        print(f"driver peak RSS {sizes[-1]:,} / {sizes[0]:,}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
