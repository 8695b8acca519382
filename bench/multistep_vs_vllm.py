"""Side by side: multi-step System 2 methods on s2d's replica vs a raw vLLM script, in output tokens/s, in one run.

    .venv/bin/python bench/multistep_vs_vllm.py                         # rar2, ~12 minutes on 2 cores
    .venv/bin/python bench/multistep_vs_vllm.py --methods s2a           # one method per command (~8-10 min each)
    .venv/bin/python bench/multistep_vs_vllm.py --methods bsm

For each method, the same inputs, n, max_tokens, temperature, engine seed and engine arguments (s2d's
defaults) and the same CPU thread binding (every core computing) on three sides, each in its own process:

- raw:     `vllm.LLM` and one `LLM.chat` per step over every prompt of that step (a fan-out step: every item
           of every chain), the prompts rendered from the same method files, what a user writes by hand;
- barrier: s2d's replica actor (Ray, the pipeline's batches, two in flight) running each step over its batch,
           as s2d did before chains flowed (`GenerationReplica(step_barrier=True)`);
- flow:    the same replica with chains that flow: each sample's next call goes out when its last returns;
           its batches in flight cover the engine's cap and run oldest first (continuous admission, issue 26);
- main:    flow as it ran before issue 26 (only when asked): two batches in flight, vLLM's first come first
           served across them, vLLM's engine worker in a process of its own;
- raw+ray (only when asked): the raw side with a local Ray started beside it and left idle.

Sizing: the first side runs a warm-up (it also starts the engine's kernels) and sizes each run from its measured
tokens/s so that the run generates for at least `--seconds` (60 s); the other sides run the same inputs (`--per-run
N` skips the sizing and repeats an earlier command's inputs). Each side then runs `--runs` times on fresh inputs
(prompts never repeat, so prefix caching cannot replay a run). Engine start-up and the warm-up are excluded. Prints
each run, the mean and spread per side; the last line is rar2's flow / raw ratio (or the first method's when rar2 is
not run). Each run also prints its profile (bench/engine_profile.py): CPU seconds by process role, how often the
engine worker's threads were preempted, and how many sequences the engine held (against its max_num_seqs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(Path(__file__).resolve().parent)
TASK_OF = {
    "rar2": "last_letter",
    "s2a": "sycophancy",
    "bsm": "pairwise_judge",
    "system1": "last_letter",
}
SIDES = ("flow", "main", "barrier", "raw", "raw+ray")
# Per method: inputs that warm the engine up, inputs that size the runs, and how far over the target the runs
# are sized (the runs' larger batches generate faster than the sizing batch's, unless that already fills the
# engine: bsm's 8 chains x 5 criteria per input do).
WARMUP = {"bsm": (1, 3, 1.25)}
DEFAULT_WARMUP = (2, 8, 2.0)


def job(method: str, n: int, max_tokens: int, temperature: float = 0.7, seed: int = 0, batch_size: int = 64) -> dict:
    return {
        "model": "smollm2-135m",
        "generation": {"batch_size": batch_size},
        "out": "unused",
        "task": {"name": TASK_OF[method], "seed": 0},
        "method": {"name": method},
        "sampling": {
            "n": n,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
        },
    }


def input_rows(spec, count: int) -> list[dict]:
    """`count` distinct inputs of the job's task, as the pipeline feeds them to a replica."""
    from s2d.engine.stages.generate import input_rows as pipeline_rows

    return list(
        pipeline_rows(
            spec.model_copy(update={"task": spec.task.model_copy(update={"num_inputs": count})}),
            num_shards=1,
        )
    )


class RawChat:
    """A raw `vllm.LLM` as the program's batched backend: one `LLM.chat` per call, over all of its prompts."""

    def __init__(self, spec):
        from vllm import LLM

        from s2d.actors.vllm_backend import resolve_block_size, resolve_dtype
        from s2d.engine.data.models import resolve_model

        engine = spec.engine
        self.llm = LLM(
            model=resolve_model(spec.model),
            dtype=resolve_dtype(engine.dtype),
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            enforce_eager=engine.enforce_eager,
            enable_prefix_caching=engine.enable_prefix_caching,
            block_size=resolve_block_size(engine.block_size),
            seed=spec.sampling.seed,
            disable_log_stats=True,
        )
        self.output_tokens = 0

    def generate(self, prompts, request, adapter=None):
        from vllm import SamplingParams

        from s2d.engine.core.program import Completion

        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
        )
        outputs = self.llm.chat(
            [[{"role": "user", "content": prompt}] for prompt in prompts],
            params,
            use_tqdm=False,
        )
        completions = [[Completion(o.text, len(o.token_ids)) for o in output.outputs] for output in outputs]
        self.output_tokens += sum(c.num_tokens for per_prompt in completions for c in per_prompt)
        return completions


class RawSide:
    def __init__(self, spec):
        from s2d.actors.replica import sampling_request
        from s2d.engine.core.criteria import input_context
        from s2d.engine.core.methods import resolve_method
        from s2d.engine.core.tasks import get_task

        self.backend, self.method = (
            RawChat(spec),
            resolve_method(spec.method.model_dump()),
        )
        self.task, self.request = (
            get_task(spec.task.name),
            sampling_request(spec.sampling),
        )
        self.input_context = input_context

    def run(self, rows: list[dict]) -> tuple[int, int]:
        from s2d.engine.core.program import run_method
        from s2d.engine.core.tasks import TaskInput

        contexts = [
            self.input_context(
                self.task,
                TaskInput(row["input_id"], row["question"], None, json.loads(row["fields"])),
            )
            for row in rows
        ]
        before = self.backend.output_tokens
        chains = run_method(self.backend, self.method, contexts, self.request)
        return self.backend.output_tokens - before, sum(map(len, chains))

    def front_end_pids(self) -> set[int]:
        return {os.getpid()}

    def start_sampling(self) -> None:
        from engine_profile import OccupancySampler, engine_counter

        self.sampler = OccupancySampler(*engine_counter(self.backend.llm.llm_engine))

    def stop_sampling(self) -> dict:
        return self.sampler.stop()


class ReplicaSide:
    """s2d's replica actor fed the pipeline's batches (`generation.batch_size` inputs, as many in flight)."""

    def __init__(self, spec, step_barrier: bool, before_issue_26: bool = False):
        import ray

        from s2d.actors.replica import GenerationReplica
        from s2d.cluster.placement import MAX_BATCHES_PER_REPLICA, batches_per_replica
        from s2d.cluster.resources import replica_resources

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        self.ray, self.batch_size = ray, spec.generation.batch_size
        self.replica = (
            ray.remote(GenerationReplica)
            .options(**replica_resources(spec, 0), max_concurrency=MAX_BATCHES_PER_REPLICA)
            .remote(**GenerationReplica.for_job(spec), step_barrier=step_barrier, batch_priority=not before_issue_26)
        )
        ray.get(self.replica.ready.remote())
        # As the pipeline does (replica_pool.plan_replica_pool), from the cap the engine actually got.
        cap = ray.get(self.replica.__ray_call__.remote(lambda replica: replica.generator.max_num_seqs))
        self.in_flight = 2 if before_issue_26 else batches_per_replica(cap, self.batch_size, spec.sampling.n)

    def run(self, rows: list[dict]) -> tuple[int, int]:
        import pyarrow as pa

        from s2d.engine.data.generated import sample_count

        batches = [
            pa.Table.from_pylist(rows[start : start + self.batch_size]).to_pydict()
            for start in range(0, len(rows), self.batch_size)
        ]
        before = self.ray.get(self.replica.stats.remote())["output_tokens"]
        pending, results = [], []
        for batch in batches:
            pending.append(self.replica.__call__.remote(batch))
            if len(pending) == self.in_flight:
                results.append(self.ray.get(pending.pop(0)))
        results.extend(self.ray.get(pending))
        after = self.ray.get(self.replica.stats.remote())["output_tokens"]
        return after - before, sum(sample_count(result) for result in results)

    def front_end_pids(self) -> set[int]:
        return {
            os.getpid(),
            self.ray.get(self.replica.__ray_call__.remote(lambda replica: os.getpid())),
        }

    def start_sampling(self) -> None:
        self.ray.get(self.replica.__ray_call__.remote(_start_sampler))
        self.recorded = self.ray.get(self.replica.__ray_call__.remote(lambda replica: replica.occupancy.summary()))

    def stop_sampling(self) -> dict:
        from engine_profile import replica_occupancy

        now = self.ray.get(self.replica.__ray_call__.remote(lambda replica: replica.occupancy.summary()))
        return {
            **self.ray.get(self.replica.__ray_call__.remote(_stop_sampler)),
            **replica_occupancy(self.recorded, now),
            "batches_in_flight": self.in_flight,
        }


def _start_sampler(replica) -> None:  # runs inside the replica actor
    sys.path.insert(0, BENCH)
    from engine_profile import OccupancySampler, engine_counter

    replica.bench_sampler = OccupancySampler(*engine_counter(replica.generator._engine))


def _stop_sampler(replica) -> dict:
    return replica.bench_sampler.stop()


def measure(side: str, spec, per_run: int | None, runs: int, seconds: float) -> dict:
    """In the side's own process: warm up, size the runs if `per_run` is None, then time each run."""
    if side == "raw+ray":
        # The raw script with a local Ray started beside it and left idle: what Ray's processes alone cost the
        # engine on these cores.
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    if side.startswith("raw"):
        runner = RawSide(spec)
    else:
        runner = ReplicaSide(spec, step_barrier=side == "barrier", before_issue_26=side == "main")
    warm, size, over = WARMUP.get(spec.method.name, DEFAULT_WARMUP)
    timed(runner, input_rows(spec, warm))  # the engine's first calls are slow: not measured
    if per_run is None:
        # (rar2 runs sized 1.33x over an 8-input sizing batch generated for 42-50 s of a 60 s target.)
        sizing = timed(runner, input_rows(spec, warm + size)[warm:])
        tokens_per_input = sizing["tokens"] / size
        per_run = math.ceil(over * seconds * sizing["tokens_per_s"] / tokens_per_input)
        per_run = min(per_run, (available_inputs(spec) - warm - size) // runs)
    rows = input_rows(spec, warm + size + runs * per_run)[warm + size :]
    return {
        "per_run": per_run,
        "runs": [profiled(runner, rows[index * per_run : (index + 1) * per_run]) for index in range(runs)],
    }


def profiled(runner, rows: list[dict]) -> dict:
    """`timed`, with the CPU seconds of every process on the machine by role and the engine's occupancy."""
    from engine_profile import cpu_by_role, cpu_snapshot

    front_end = runner.front_end_pids()
    runner.start_sampling()
    before = cpu_snapshot()
    result = timed(runner, rows)
    after = cpu_snapshot()
    return {
        **result,
        "cpu": cpu_by_role(before, after, front_end),
        "occupancy": runner.stop_sampling(),
    }


def available_inputs(spec) -> int:
    """Distinct training inputs the task can generate (pairwise_judge has a few dozen)."""
    from s2d.engine.core.tasks import get_task

    task, count = get_task(spec.task.name), 4096
    while True:
        try:
            return len(task.generate(count, 0, "train"))
        except ValueError:
            count //= 2


def timed(runner, rows: list[dict]) -> dict:
    started = time.perf_counter()
    tokens, samples = runner.run(rows)
    seconds = time.perf_counter() - started
    return {
        "tokens": tokens,
        "samples": samples,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


def run_side(side: str, settings: dict, per_run: int | None) -> dict:
    """One side in a child process (vLLM reads its thread binding at engine start); its result dict."""
    from s2d.cluster.resources import cpu_thread_env

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The raw side gets the binding s2d's lone replica sets for itself, so both compute on every core.
    env.update(cpu_thread_env(1, os.cpu_count() or 1) if side.startswith("raw") else {})
    env["S2D_ENGINE_WORKER_PROCESS"] = "1" if side == "main" else "0"  # the replica's engine layout before issue 26
    argument = json.dumps({**settings, "side": side, "per_run": per_run})
    child = subprocess.run(
        [sys.executable, __file__, "--child", argument],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode or not lines:
        sys.exit(f"{side}: failed\n{child.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


ROLES = ("front end", "engine core", "engine worker", "ray", "other")


def compare(
    method: str,
    sides: list[str],
    n: int,
    max_tokens: int,
    runs: int,
    seconds: float,
    per_run: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Run the sides one after another on the same inputs; print each run; mean tokens/s per side."""
    from engine_profile import format_occupancy

    settings = {
        "batch_size": batch_size,
        "method": method,
        "n": n,
        "max_tokens": max_tokens,
        "runs": runs,
        "seconds": seconds,
    }
    print(
        f"\n{method} ({TASK_OF[method]}), n={n}, max_tokens={max_tokens}, {runs} runs per side",
        flush=True,
    )
    means = {}
    for side in sides:
        result = run_side(side, settings, per_run)
        per_run = result["per_run"]  # the first side sizes the runs, the others repeat its inputs
        rates = [run["tokens_per_s"] for run in result["runs"]]
        means[side] = sum(rates) / len(rates)
        for index, run in enumerate(result["runs"], 1):
            print(
                f"  {side:<8} run {index}: {per_run} inputs, {run['samples']:>5} samples, {run['tokens']:>6} "
                f"tokens in {run['seconds']:6.1f} s = {run['tokens_per_s']:6.1f} tok/s",
                flush=True,
            )
        for index, run in enumerate(result["runs"], 1):
            cpu, occupancy = run["cpu"], run["occupancy"]
            print(
                f"  {side:<8} run {index} CPU s of {cpu['capacity']:.0f} (wall x cores): "
                + ", ".join(f"{role} {cpu[role]:.1f}" for role in ROLES)
                + f"; machine busy {cpu['machine']:.1f}; worker threads preempted {cpu['worker_preempted']}"
                f" times. Engine: {occupancy['mean_unfinished']:.0f} sequences "
                f"unfinished on average, running <= max_num_seqs {occupancy['max_num_seqs']}: mean "
                f"{occupancy['mean_running']:.0f}, below the cap {occupancy['below_cap'] * 100:.0f}% of the time",
                flush=True,
            )
            print(f"  {side:<8} run {index} occupancy: {format_occupancy(occupancy)}", flush=True)
        spread = (max(rates) - min(rates)) / means[side] * 100
        print(
            f"  {side:<8} mean {means[side]:6.1f} tok/s, spread {min(rates):.1f}-{max(rates):.1f} ({spread:.1f}%)"
            + ("  [a run generated < 60 s]" if min(r["seconds"] for r in result["runs"]) < 60 else ""),
            flush=True,
        )
    for numerator, denominator in (
        ("flow", "main"),
        ("flow", "raw"),
        ("flow", "barrier"),
        ("barrier", "raw"),
        ("raw+ray", "raw"),
    ):
        if numerator in means and denominator in means:
            print(
                f"  {method}: {numerator} / {denominator} = {means[numerator] / means[denominator]:.3f}",
                flush=True,
            )
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["rar2"], choices=sorted(TASK_OF))
    parser.add_argument("--sides", nargs="+", default=[s for s in SIDES if s != "main"], choices=SIDES)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="generation time each run is sized for",
    )
    parser.add_argument(
        "--per-run",
        type=int,
        help="inputs per run (skips the sizing warm-up): repeat earlier runs",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="generation.batch_size of the replica sides: runs of several batches show the occupancy outside the "
        "job's last batch (fed), which continuous admission is judged by",
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; sides in order: {', '.join(args.sides)}", flush=True)
    results = {
        method: compare(
            method,
            args.sides,
            args.n,
            args.max_tokens,
            args.runs,
            args.seconds,
            args.per_run,
            args.batch_size,
        )
        for method in args.methods
    }
    headline = "rar2" if "rar2" in results else args.methods[0]
    means = results[headline]
    if {"flow", "raw"} <= set(means):
        print(f"ratio s2d / raw vLLM ({headline}, output tokens/s): {means['flow'] / means['raw']:.3f}")


def child(argument: str) -> None:
    from s2d.engine.core.spec import parse_spec

    sys.path.insert(0, BENCH)

    settings = json.loads(argument)
    spec = parse_spec(job(settings["method"], settings["n"], settings["max_tokens"], batch_size=settings["batch_size"]))
    print(
        "RESULT "
        + json.dumps(
            measure(
                settings["side"],
                spec,
                settings["per_run"],
                settings["runs"],
                settings["seconds"],
            )
        ),
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
