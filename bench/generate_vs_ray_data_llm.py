"""Side by side: an s2d generation job against Ray Data LLM over the same prompts, in samples/s, in one run.

    .venv/bin/python bench/generate_vs_ray_data_llm.py       # after `make test`'s set-up; ~7 minutes on 2 cores
    .venv/bin/python bench/generate_vs_ray_data_llm.py --profile DIR   # also py-spy each engine actor (+ children)

The job: INPUTS last_letter inputs x N samples of Chain-of-Thought (`cot`), the packaged smollm2-135m.
CoT is one LLM call per sample, so both sides do exactly the same engine work (a multi-step method would
measure s2d's chaining, which Ray Data LLM has no counterpart for), and it asks for reasoning, the kind of
sample distillation pays for; `system1` would measure answers of a few tokens. This model still answers
briefly (~15 tokens per sample), so prefilling the ~77-token prompt is much of the work on both sides;
both use s2d's 32-token KV blocks (vLLM's CPU default of 128 is too coarse to share a shorter prompt
between the samples of `n` or between Ray Data LLM's copies).

- s2d: `s2d.engine.stages.generate.run_generate` on a JobSpec (one replica, vLLM's `n` = N, curation and shard commit
  included), its samples and output tokens read from the job's metrics.json.
- Ray Data LLM: `ray.data.llm.build_processor` with a `vLLMEngineProcessorConfig`. It keeps only the first
  of a request's n samples, so every input goes in N times with n=1, its copies adjacent and prefix caching
  on so they can share the prompt's KV cache. The same chat-formatted prompts (the method's rendered
  template as one user turn), temperature, top_p, max_tokens and engine seed (per-request seeds crash
  vLLM's CPU build, FACTS.md), dtype, max_model_len, KV cache size and block size as s2d's replica. Measured twice:
  with its defaults (vLLM keeps one core for its front end) and with the thread binding s2d gives its only
  replica (s2d.cluster.resources.cpu_thread_env, every core computing) passed through the processor's
  runtime_env; the headline compares s2d with the faster of the two.

Each side runs in its own process with its own embedded Ray (the same `ray.init` arguments), so no engine or
thread setting leaks between them. Engine start-up is the time until the actor holding the engine finished
its constructor (polled from Ray's state API); generation is the rest of the job. The last line is the
ratio s2d / Ray Data LLM in samples/s over generation (start-up excluded: it is a fixed cost per job that a
production-sized job amortises); the whole-job ratio is printed just before it. Sampled lengths differ
between runs (thread count changes the float sums), so compare tokens/s too. With --profile, DIR gets one
py-spy file of collapsed stacks per side, over its generation window.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS, N, MAX_TOKENS = 16, 8, 64  # 128 samples: one engine batch on both sides, ~1-2 minutes of decode each
TEMPERATURE, TOP_P, SEED = 0.7, 1.0, 0
JOB = {
    "model": "smollm2-135m",
    "task": {"name": "last_letter", "num_inputs": INPUTS, "seed": 0},
    "method": {"name": "cot"},
    "sampling": {"n": N, "temperature": TEMPERATURE, "top_p": TOP_P, "max_tokens": MAX_TOKENS, "seed": SEED},
    "curate": {"rule": "majority", "threshold": 0.125},
}
SIDES = {
    "s2d": "s2d run_generate (1 replica, n=8)",
    "ray-data-llm": "Ray Data LLM, defaults (1 core reserved)",
    "ray-data-llm-threads": "Ray Data LLM, s2d's thread env",
}
CHILD_TIMEOUT_S = 300
LIGHT_STAGE_CPUS = 0.1  # Ray Data LLM's stages around the engine (templating, tokenizing, pre/postprocess)


class EngineReadyWatch:
    """Polls Ray's actor table for the Ray Data actor whose UDF holds the engine; its repr names the UDF only
    once the constructor (engine start) has returned."""

    def __init__(self, udf_name: str, profile_to: str | None = None, interval_s: float = 0.5):
        self.udf_name, self.profile_to, self.interval_s = udf_name, profile_to, interval_s
        self.ready_at: float | None = None
        self.profiler: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="engine-ready-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        from ray.util.state import list_actors

        while not self._stop.is_set() and self.ready_at is None:
            try:
                actors = list_actors(filters=[("state", "=", "ALIVE")], detail=True, raise_on_missing_output=False)
            except Exception:  # noqa: BLE001 - the state API answers only once the dashboard is up
                actors = []
            for actor in actors:
                if self.udf_name in (actor.repr_name or ""):
                    self.ready_at = time.perf_counter()
                    if self.profile_to:
                        self.profiler = start_profile(actor.pid, self.profile_to)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.profiler.wait(timeout=60)


def start_profile(pid: int, path: str) -> subprocess.Popen:
    """py-spy on the engine actor and its children (vLLM's engine core), collapsed stacks, not pausing them."""
    command = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "20",
        "--format",
        "raw",
        "--output",
        path,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def job_prompts() -> list[tuple[str, str]]:
    """(input_id, first-step prompt) of the job's inputs, rendered exactly as s2d's replica renders them."""
    from s2d.engine.core.criteria import input_context
    from s2d.engine.core.methods import resolve_method
    from s2d.engine.core.spec import parse_spec
    from s2d.engine.core.tasks import get_task
    from s2d.engine.data.sources import iter_inputs

    spec = parse_spec(JOB)
    task, method = get_task(spec.task.name), resolve_method(spec.method.model_dump())
    return [
        (item.input_id, method.render(0, input_context(task, item))) for batch in iter_inputs(spec) for item in batch
    ]


def start_ray():
    import ray

    from s2d.cluster.connect import embedded_init_kwargs

    started = time.perf_counter()
    ray.init(**embedded_init_kwargs())
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # s2d turns Ray Data's bars off; the same for both sides
    context.print_on_execution_start = False
    return ray, time.perf_counter() - started


def measure_s2d(out: str, profile_to: str | None) -> dict:
    from s2d.engine.core.spec import parse_spec
    from s2d.engine.stages.generate import run_generate

    spec = parse_spec(JOB | {"out": out})
    ray, ray_init_s = start_ray()
    try:
        watch = EngineReadyWatch("GenerationReplica", profile_to)
        started = time.perf_counter()
        summary = run_generate(spec, progress=False)
        finished = time.perf_counter()
        watch.stop()
    finally:
        ray.shutdown()
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {
        "ray_init_s": ray_init_s,
        "job_s": finished - started,
        "startup_s": _startup(watch, started),
        "samples": metrics["samples"],
        "output_tokens": metrics["tokens"],
        "detail": f"accepted {summary.accepted}, rejected {summary.rejected}",
    }


def measure_ray_data_llm(s2d_threads: bool, profile_to: str | None) -> dict:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from s2d.actors.vllm_backend import resolve_block_size, resolve_dtype
    from s2d.cluster.resources import cpu_thread_env
    from s2d.engine.core.spec import EngineSpec
    from s2d.engine.data.models import resolve_model

    engine = EngineSpec()  # s2d's replica engine settings, as the job above runs them
    config = vLLMEngineProcessorConfig(
        model_source=resolve_model(JOB["model"]),
        engine_kwargs=dict(
            dtype=resolve_dtype(engine.dtype),
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            enforce_eager=engine.enforce_eager,
            enable_prefix_caching=True,
            block_size=resolve_block_size(engine.block_size),
            seed=SEED,
            disable_log_stats=True,
        ),
        concurrency=1,
        placement_group_config={"bundles": [{"CPU": 1}]},  # on CPU it would otherwise ask for a GPU
        log_engine_metrics=False,  # its Ray metrics need ray[serve] (FACTS.md); s2d exports none from vLLM either
        runtime_env={"env_vars": cpu_thread_env(1, os.cpu_count() or 1)} if s2d_threads else None,
        # Each CPU stage's actor asks for a whole CPU by default: on 2 cores the chat-template and tokenizer
        # actors took both and the engine waited forever (seen here). They are light; they share the cores.
        **{
            stage: {"num_cpus": LIGHT_STAGE_CPUS}
            for stage in ("chat_template_stage", "tokenize_stage", "detokenize_stage")
        },
    )
    sampling = dict(
        n=1, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=MAX_TOKENS, detokenize=False
    )  # its detokenize stage decodes, as Ray's documented example sets up
    rows = [{"input_id": input_id, "prompt": prompt} for input_id, prompt in job_prompts() for _ in range(N)]
    ray, ray_init_s = start_ray()  # before build_processor, which would otherwise start Ray its own way
    try:
        watch = EngineReadyWatch("vLLMEngineStageUDF", profile_to)
        started = time.perf_counter()
        processor = build_processor(
            config,
            preprocess=lambda row: dict(
                messages=[{"role": "user", "content": row["prompt"]}], sampling_params=sampling
            ),
            postprocess=lambda row: dict(
                input_id=row["input_id"], text=row["generated_text"], tokens=row["num_generated_tokens"]
            ),
            preprocess_map_kwargs={"num_cpus": LIGHT_STAGE_CPUS},
            postprocess_map_kwargs={"num_cpus": LIGHT_STAGE_CPUS},
        )
        outputs = processor(ray.data.from_items(rows)).take_all()
        finished = time.perf_counter()
        watch.stop()
    finally:
        ray.shutdown()
    return {
        "ray_init_s": ray_init_s,
        "job_s": finished - started,
        "startup_s": _startup(watch, started),
        "samples": len(outputs),
        "output_tokens": sum(int(row["tokens"]) for row in outputs),
        "detail": f"{len({row['input_id'] for row in outputs})} inputs",
    }


def _startup(watch: EngineReadyWatch, started: float) -> float | None:
    return None if watch.ready_at is None else watch.ready_at - started


def run_side(side: str, out: str, profile_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    profile_to = str(Path(profile_dir).resolve() / f"{side}.txt") if profile_dir else ""
    # Its own session and process group: a side that overruns is killed with its Ray processes and engine.
    child = subprocess.Popen(
        [sys.executable, __file__, "--side", side, out, profile_to],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode or not lines:
        return {"error": (stderr or stdout)[-3000:]}
    # vLLM logs the cores its compute threads were bound to: the check that the thread env took effect.
    bindings = re.findall(r"core ids=(\[[\d, ]*\])", stdout)
    return json.loads(lines[-1].removeprefix("RESULT ")) | {"engine_cores": bindings[-1] if bindings else "?"}


def report(label: str, result: dict) -> None:
    if "error" in result:
        print(f"{label:<42} FAILED\n{result['error']}", flush=True)
        return
    samples, tokens, job_s, startup_s = result["samples"], result["output_tokens"], result["job_s"], result["startup_s"]
    line = (
        f"{label:<42} {samples:>4} samples {tokens:>6} tokens ({tokens / samples:4.1f}/sample) | job {job_s:6.1f} s "
        f"= {samples / job_s:5.2f} samples/s {tokens / job_s:6.1f} tok/s"
    )
    if startup_s is not None:
        generation_s = job_s - startup_s
        line += (
            f" | start-up {startup_s:5.1f} s, generation {generation_s:6.1f} s = {samples / generation_s:5.2f} "
            f"samples/s {tokens / generation_s:6.1f} tok/s"
        )
    print(
        f"{line} | ray.init {result['ray_init_s']:.1f} s | engine cores {result['engine_cores']} | {result['detail']}",
        flush=True,
    )


def samples_per_s(result: dict, generation_only: bool) -> float:
    seconds = result["job_s"] - (result["startup_s"] if generation_only else 0.0)
    return result["samples"] / seconds


def main(profile_dir: str | None) -> None:
    results = {}
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s2d-bench-") as scratch:
        for side, label in SIDES.items():
            results[side] = run_side(side, str(Path(scratch) / side), profile_dir)
            report(label, results[side])
    s2d = results["s2d"]
    baselines = {side: result for side, result in results.items() if side != "s2d" and "error" not in result}
    if "error" in s2d or not baselines:
        sys.exit("no ratio: a side failed")
    measurable = all(result["startup_s"] is not None for result in [s2d, *baselines.values()])
    fairest = max(baselines, key=lambda side: samples_per_s(baselines[side], measurable))
    print(
        f"ratio s2d / {SIDES[fairest]}, whole job (start-up included): "
        f"{samples_per_s(s2d, False) / samples_per_s(baselines[fairest], False):.2f}x"
    )
    scope = "generation (start-up excluded)" if measurable else "whole job (start-up not separable)"
    print(
        f"ratio s2d / {SIDES[fairest]}, samples/s over {scope}: "
        f"{samples_per_s(s2d, measurable) / samples_per_s(baselines[fairest], measurable):.2f}x"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        side, out, profile_to = sys.argv[2], sys.argv[3], sys.argv[4] or None
        measured = (
            measure_s2d(out, profile_to)
            if side == "s2d"
            else measure_ray_data_llm(side == "ray-data-llm-threads", profile_to)
        )
        print("RESULT " + json.dumps(measured), flush=True)
    else:
        main(sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else None)
