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
climbs grows with the input), the CPU the driver and the whole machine spent, and how many Ray worker processes
were started (each one imports Ray, pyarrow and s2d: Ray replaces a worker it stopped as idle).

A result names its code: the commit of `--code` (and the files that differ from it; `--code-commit` for a copy
without .git) and the files the driver and a Ray worker loaded s2d from; `--record FILE` appends it all as JSON.
The child imports `--code`'s s2d, not the venv's editable install: a sitecustomize on its PYTHONPATH (inherited
by Ray's workers) maps s2d's subpackages to `--code`'s folders, and the job is refused if either process loaded
s2d from elsewhere. A checkout of the flat layout from before `s2d` (main 1ca35ff: engine/, actors/ at the top)
runs its own bench/scale.py as the child (its stand-in packs that code's contract), after naming its `engine`.
"""

from __future__ import annotations

import argparse
import hashlib
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


class RssJumps(threading.Thread):
    """Every 10 ms this driver's RSS and its high-water mark (VmHWM); at each new high 16 MiB above the last one
    recorded, what every Python thread was running (its innermost frames). A transient shorter than the sampling
    interval never shows in the RSS read, but it raises the high-water mark: `hwm_jumps` names the 10 ms in which
    it happened, and the threads there."""

    def __init__(self, interval: float = 0.01, step_mib: float = 16.0):
        super().__init__(daemon=True)
        self.interval, self.step_mib, self.stop = interval, step_mib, threading.Event()
        self.jumps: list[dict] = []
        self.hwm_jumps: list[dict] = []
        self.start_mib = 0.0
        self.page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20

    def run(self) -> None:
        with open("/proc/self/statm") as statm, open("/proc/self/status") as status:  # read every 10 ms: kept open
            started, high, hwm = time.monotonic(), self._rss(statm), self._hwm(status)
            self.start_mib = high
            while not self.stop.wait(self.interval):
                rss, now_hwm = self._rss(statm), self._hwm(status)
                if rss >= high + self.step_mib:
                    self.jumps.append({"s": round(time.monotonic() - started, 2), "rss_mib": round(rss)})
                    self.jumps[-1]["threads"] = self._stacks()
                    high = rss
                if now_hwm >= hwm + self.step_mib and now_hwm > rss + self.step_mib:  # a peak between two reads
                    self.hwm_jumps.append(
                        {"s": round(time.monotonic() - started, 2), "hwm_mib": round(now_hwm), "rss_mib": round(rss)}
                    )
                    self.hwm_jumps[-1]["threads"] = self._stacks()
                hwm = max(hwm, now_hwm)

    @staticmethod
    def _hwm(status) -> float:
        status.seek(0)
        return _status_mib(status.read(), "VmHWM")

    def _rss(self, statm) -> float:
        statm.seek(0)
        return int(statm.read().split()[1]) * self.page_mib

    def _stacks(self) -> dict[str, str]:
        import traceback

        names = {thread.ident: thread.name for thread in threading.enumerate()}
        stacks = {}
        for ident, frame in sys._current_frames().items():
            if ident == self.ident:
                continue
            frames = [f for f in traceback.extract_stack(frame)[::-1] if Path(f.filename).name != "threading.py"]
            stacks[names.get(ident, str(ident))] = " < ".join(f"{Path(f.filename).name}:{f.name}" for f in frames[:5])
        return stacks

    def largest(self, count: int = 3) -> list[dict]:
        """The `count` jumps that added the most over the high before them."""
        highs = [self.start_mib] + [jump["rss_mib"] for jump in self.jumps]
        steps = sorted(zip(self.jumps, highs), key=lambda pair: pair[1] - pair[0]["rss_mib"])
        return [jump | {"added_mib": round(jump["rss_mib"] - before)} for jump, before in steps[:count]]


def _status_mib(status: str, field: str) -> float:
    """One kB field of /proc/self/status (VmRSS, VmHWM), in MiB; 0.0 where the kernel does not report it."""
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _hwm_mib() -> float:
    return _status_mib(Path("/proc/self/status").read_text(), "VmHWM")


def _rss_mib() -> float:
    return round(_status_mib(Path("/proc/self/status").read_text(), "VmRSS"))


def child(args: argparse.Namespace) -> None:
    """One job in this process: patch in the stand-in, run `run_generate`, print one JSON line of figures."""
    sys.path.insert(0, args.code)
    if not (Path(args.code) / "s2d" / "__init__.py").is_file():
        _flat_child(args)
        return
    import ray

    import s2d
    import s2d.actors.replica as replica_module
    import s2d.engine.data.generated as generated_module
    from s2d.engine.core.spec import load_spec
    from s2d.engine.stages.generate import run_generate

    replica_module.GenerationReplica = StandInReplica  # run_generate imports it from there at call time
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    worker_files = ray.get(ray.remote(num_cpus=0)(_loaded_files).remote())
    loaded = {"driver": _loaded_files(), "ray_worker": worker_files}
    print(json.dumps({"loaded": loaded}), flush=True)
    _check_loaded(args.code, loaded, (s2d, replica_module, generated_module))
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
    sampler, jumps = StoreSampler(interval=0.5), RssJumps()
    sampler.start()
    jumps.start()
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start(8)
        first = threading.Timer(args.trace_memory, lambda: setattr(sampler, "first", tracemalloc.take_snapshot()))
        first.start()
    started, cpu_before, machine_before = time.monotonic(), _own_cpu_s(), _machine_busy_s()
    summary = run_generate(spec, progress=False)
    seconds = time.monotonic() - started
    driver_cpu, machine_cpu = _own_cpu_s() - cpu_before, _machine_busy_s() - machine_before
    if args.trace_memory and getattr(sampler, "first", None) is not None:
        _print_growth(sampler.first, tracemalloc.take_snapshot())
    import ctypes

    rss_at_end = _rss_mib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what of the RSS is freed memory glibc kept, not live objects
    rss_trimmed = _rss_mib()
    sampler.stop.set()
    sampler.join()
    jumps.stop.set()
    jumps.join()
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    workers_started = _workers_started(ray)
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
                # The driver's own peak: VmHWM, its address space's high-water mark. Not ru_maxrss: at exec the
                # kernel carries the spawning process's peak into it (measured: a parent that peaked at 431 MiB
                # starts children reporting 431 MiB), which was the "505 MiB transient" of the 5M runs whose parent
                # had just written the inputs (make_inputs peaks at ~450 MiB for any size from 1M up).
                "driver_peak_rss_mib": round(_hwm_mib()),
                "driver_ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "driver_rss_jumps": jumps.largest(),
                "driver_hwm_jumps_unsampled": jumps.hwm_jumps,
                "object_store_peak_mib": sampler.peak_mib,
                "spilled_mib": sampler.spilled_mib,
                "curve_s_rss_plasma_mib": sampler.curve(),
                "driver_rss_before_job_mib": rss_before_job,
                "driver_rss_at_end_mib": rss_at_end,
                "driver_rss_after_malloc_trim_mib": rss_trimmed,
                "ray_workers_started": workers_started,
                # where the CPU went: the driver process (all its threads), and every process on the machine
                "driver_cpu_s": round(driver_cpu, 1),
                "machine_busy_cpu_s": round(machine_cpu, 1),
            }
        )
    )
    ray.shutdown()


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _workers_started(ray) -> int | None:
    """Python worker processes this Ray session started (one log file each): a worker that Ray stops when idle is
    replaced by a new one, which imports Ray, pyarrow and s2d again (seconds of CPU on two cores)."""
    try:
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except AttributeError:  # noqa: BLE001 - a diagnostic, not a result
        return None
    return len(list(logs.glob("worker-*.out")))


def _loaded_files() -> dict[str, str]:
    """The files this process runs s2d from (its package and the layers a job touches)."""
    import importlib

    return {name: importlib.import_module(name).__file__ for name in ("s2d", "s2d.engine", "s2d.actors")}


def _check_loaded(code: str, loaded: dict, modules: tuple) -> None:
    """Stop unless the driver and a Ray worker both run `code`'s s2d: a result must name the code it measured."""
    files = [path for where in loaded.values() for path in where.values()] + [module.__file__ for module in modules]
    foreign = [path for path in files if not Path(path).resolve().is_relative_to(Path(code).resolve())]
    if foreign:
        raise SystemExit(f"--code {code}: s2d was loaded from outside it ({foreign[0]}); not measuring")


def _flat_child(args: argparse.Namespace) -> None:
    """A checkout of the flat layout from before `s2d` (main 1ca35ff: engine/, actors/ at the top): its own
    bench/scale.py runs the job (its stand-in packs that code's contract), after naming the `engine` it loads."""
    import runpy

    import engine

    loaded = {"driver": {"engine": engine.__file__}}
    print(json.dumps({"loaded": loaded}), flush=True)
    if not Path(engine.__file__).resolve().is_relative_to(Path(args.code).resolve()):
        raise SystemExit(f"--code {args.code}: engine was loaded from {engine.__file__}; not measuring")
    sys.argv = [str(Path(args.code) / "bench" / "scale.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


def _code_identity(code: str) -> dict:
    """The git commit of `code` (and the files that differ from it), or `--code-commit` for a copy without .git."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", code, *argv], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    if not (Path(code) / ".git").exists():
        return {"commit": None, "changed": None}
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "changed": changed}


def _import_path_env(code: str, work: Path) -> dict:
    """The child's environment: `code` first on PYTHONPATH, and for the `s2d` layout a sitecustomize (it runs in
    the driver and in every Ray worker, which inherit the environment) that maps s2d's subpackages to `code`'s
    folders ahead of the venv's editable install, whose finder would otherwise resolve s2d.engine & co. to the
    installed checkout for a commit whose s2d/__init__ does not put its own checkout on the path."""
    if not (Path(code) / "s2d" / "__init__.py").is_file():
        return os.environ | {"PYTHONPATH": code}
    hook = work / f"import-hook-{hashlib.sha1(str(Path(code).resolve()).encode()).hexdigest()[:12]}"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(code=str(Path(code).resolve())))
    return os.environ | {"PYTHONPATH": f"{hook}{os.pathsep}{code}"}


SITECUSTOMIZE = """# Written by bench/scale.py: this process imports s2d from {code!r}, whatever is installed.
import sys
import tomllib
from importlib.util import spec_from_file_location
from pathlib import Path

_CODE = Path({code!r})
_LAYOUT = tomllib.loads((_CODE / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {{}})
_DIRS = {{"s2d": _CODE / "s2d"}} | {{name: _CODE / folder for name, folder in _LAYOUT.items()}}


class _CheckoutFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in _DIRS:
            return None
        folder = _DIRS[fullname]
        return spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


sys.meta_path.insert(0, _CheckoutFinder)
"""


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
    parser.add_argument("--record", help="append each size's figures, with the code that ran, to this JSONL file")
    parser.add_argument("--code-commit", help="the commit --code was copied from, where it has no .git (an archive)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    identity = {"path": str(Path(args.code).resolve())} | _code_identity(args.code)
    identity["commit"] = identity["commit"] or args.code_commit
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
        env = _import_path_env(args.code, work)
        # cwd: Ray puts the driver's working directory on its workers' path, so they import the same checkout
        child_started, machine_before = time.monotonic(), _machine_busy_s()
        done = subprocess.run(command, env=env, cwd=args.code, capture_output=True, text=True)
        # The same for either layout (the flat one runs its own child): the machine's CPU over the child's life,
        # Ray's start and stop included
        whole = {"child_wall_s": round(time.monotonic() - child_started, 1)}
        whole["child_machine_cpu_s"] = round(_machine_busy_s() - machine_before, 1)
        if args.trace_memory and "grew " in done.stderr:
            print(done.stderr[done.stderr.find("grew ") :], file=sys.stderr)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        figures = [line for line in lines if "inputs" in line]
        if done.returncode or not figures:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {size}: the job failed (exit {done.returncode})")
        loaded = next((line["loaded"] for line in lines if "loaded" in line), None)
        results[size] = figures[-1] | whole | {"code": identity, "loaded": loaded, "keep_samples": args.keep_samples}
        print(f"{size}: {json.dumps(results[size])}", flush=True)
        if args.record:
            with open(args.record, "a") as record:
                record.write(json.dumps(results[size] | {"size": size, "at": time.strftime("%FT%TZ", time.gmtime())}))
                record.write("\n")
        subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        f"\ncode: {args.code} at {identity['commit']} (changed: {identity['changed']}); stand-in replica (instant "
        f"answers), n={N_SAMPLES}, batch {args.batch_size}, keep_samples {args.keep_samples}"
    )
    for where, files in (next(iter(results.values()))["loaded"] or {}).items():
        print(f"loaded by the {where}: " + ", ".join(f"{name} {path}" for name, path in files.items()))
    print(
        "| inputs | wall | inputs/s (job) | inputs/s (pipeline) | driver peak RSS | object store peak | spilled "
        "| driver CPU | machine CPU | Ray workers started |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, found in results.items():
        print(
            f"| {size:,} | {found['seconds']:.0f} s | {found['inputs_per_s']:,} | {found['pipeline_inputs_per_s']:,} "
            f"| {found['driver_peak_rss_mib']} MiB | {found['object_store_peak_mib']:.0f} MiB "
            f"| {found['spilled_mib']:.0f} MiB | {found.get('driver_cpu_s', '-')} s "
            f"| {found.get('machine_busy_cpu_s', '-')} s ({found['child_machine_cpu_s']} s in "
            f"{found['child_wall_s']} s with Ray's start and stop) | {found.get('ray_workers_started', '-')} |"
        )
    for size, found in results.items():
        curve = ", ".join(f"{t:.0f} s {rss:.0f}/{plasma:.0f}" for t, rss, plasma in found["curve_s_rss_plasma_mib"])
        print(f"{size:,} over time (driver RSS / object store, MiB): {curve}")
        print(
            f"{size:,} driver RSS: {found['driver_rss_before_job_mib']:.0f} MiB before the job, "
            f"{found['driver_rss_at_end_mib']:.0f} at its end, {found['driver_rss_after_malloc_trim_mib']:.0f} "
            "after malloc_trim (the rest is live memory)"
        )
        for jump in found.get("driver_rss_jumps", []):
            threads = "; ".join(f"[{name}] {stack}" for name, stack in jump["threads"].items())
            print(f"{size:,} driver RSS +{jump['added_mib']} MiB to {jump['rss_mib']} at {jump['s']} s: {threads}")
        for jump in found.get("driver_hwm_jumps_unsampled", []):
            threads = "; ".join(f"[{name}] {stack}" for name, stack in jump["threads"].items())
            print(
                f"{size:,} driver peak rose to {jump['hwm_mib']} MiB between two 10 ms reads (RSS {jump['rss_mib']} "
                f"after it) at {jump['s']} s: {threads}"
            )
    if len(results) >= 2:
        sizes = sorted(results)
        ratio = results[sizes[-1]]["driver_peak_rss_mib"] / results[sizes[0]]["driver_peak_rss_mib"]
        print(f"driver peak RSS {sizes[-1]:,} / {sizes[0]:,}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
