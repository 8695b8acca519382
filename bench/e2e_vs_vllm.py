"""Side by side, engine start included: `s2d generate` vs a raw vLLM script on the same job, in samples/s.

    .venv/bin/python bench/e2e_vs_vllm.py            # after `make test`'s set-up; ~5 minutes on 2 cores

The job: 128 last-letter inputs x n=8 samples x max 96 tokens, System 1 prompts (one call per sample),
temperature 0.7, engine seed 0, the packaged model already converted. Each side is one fresh process, timed
from its start to its exit (imports, Ray, engine start and load, generation, output), `--runs` times in turn:

- s2d: `s2d generate` on the job (embedded Ray, one replica, curation, Parquet shards, the accounting check);
- raw: a script that builds `vllm.LLM` with s2d's engine settings and thread binding, then one `LLM.chat`
  over all prompts (nothing written).

Prints each run and s2d's own stage timings (metrics.json); the last line is s2d / raw in samples/s (means).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JOB = {
    "model": "smollm2-135m",
    "task": {"name": "last_letter", "num_inputs": 128, "seed": 0},
    "method": {"name": "system1"},
    "sampling": {"n": 8, "temperature": 0.7, "max_tokens": 96, "seed": 0},
}

RAW_SCRIPT = """
import sys
from vllm import LLM, SamplingParams
from s2d.actors.vllm_backend import resolve_block_size, resolve_dtype
from s2d.engine.data.models import resolve_model
from s2d.engine.stages.generate import input_rows
from s2d.engine.core.spec import parse_spec
import json

if __name__ == "__main__":
    spec = parse_spec(json.loads(sys.argv[1]))
    engine, sampling = spec.engine, spec.sampling
    llm = LLM(model=resolve_model(spec.model), dtype=resolve_dtype(engine.dtype), max_model_len=engine.max_model_len,
              gpu_memory_utilization=engine.gpu_memory_utilization, enforce_eager=engine.enforce_eager,
              enable_prefix_caching=engine.enable_prefix_caching, block_size=resolve_block_size(engine.block_size),
              seed=sampling.seed, disable_log_stats=True)
    conversations = [[{"role": "user", "content": row["prompt"]}] for row in input_rows(spec, num_shards=1)]
    outputs = llm.chat(conversations, SamplingParams(n=sampling.n, temperature=sampling.temperature,
                                                      max_tokens=sampling.max_tokens), use_tqdm=False)
    print("SAMPLES", sum(len(output.outputs) for output in outputs), flush=True)
"""


def _timed_child(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run one side in its own process; its wall time includes everything it does, engine start too."""
    started = time.perf_counter()
    child = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return child, time.perf_counter() - started


def run_raw() -> dict:
    from s2d.cluster.resources import cpu_thread_env

    env = dict(os.environ, PYTHONPATH=str(ROOT), **cpu_thread_env(1, os.cpu_count() or 1))
    child, seconds = _timed_child([sys.executable, "-c", RAW_SCRIPT, json.dumps({**JOB, "out": "unused"})], env)
    samples = [int(line.split()[1]) for line in child.stdout.splitlines() if line.startswith("SAMPLES ")]
    if child.returncode or not samples:
        sys.exit(f"raw: failed\n{child.stderr[-3000:]}")
    return {"seconds": seconds, "samples": samples[0]}


def run_s2d(workdir: Path) -> dict:
    out = workdir / f"s2d-{time.monotonic_ns()}"
    job_file = workdir / "job.yaml"
    job_file.write_text(yaml.safe_dump({**JOB, "out": str(out)}))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child, seconds = _timed_child(
        [sys.executable, "-m", "s2d.engine.cli", "generate", str(job_file), "--no-progress"], env
    )
    if child.returncode:
        sys.exit(f"s2d: failed\n{child.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    console = Path(tempfile.gettempdir()) / f"s2d-e2e-console-{out.name}.log"  # kept: what a user would see
    console.write_text(child.stdout + child.stderr)
    return {
        "seconds": seconds,
        "samples": metrics["samples"],
        "stage_seconds": metrics.get("stage_seconds", {}),
        "time_to_first_batch_s": metrics.get("time_to_first_batch_s"),
        "occupancy": metrics.get("occupancy_by_replica", {}),
        "tracebacks": (child.stdout + child.stderr).count("Traceback"),
        "console": str(console),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{JOB['task']['num_inputs']} inputs x n={JOB['sampling']['n']} x max {JOB['sampling']['max_tokens']} "
        f"tokens, system1; {os.cpu_count()} CPUs; engine start included",
        flush=True,
    )
    rates: dict[str, list[float]] = {"raw": [], "s2d": []}
    with tempfile.TemporaryDirectory() as workdir:
        for index in range(1, args.runs + 1):
            for side in ("raw", "s2d"):
                result = run_raw() if side == "raw" else run_s2d(Path(workdir))
                rates[side].append(result["samples"] / result["seconds"])
                print(
                    f"{side:<4} run {index}: {result['samples']} samples in {result['seconds']:6.1f} s = "
                    f"{rates[side][-1]:5.2f} samples/s",
                    flush=True,
                )
                if side == "s2d":
                    stages = ", ".join(f"{name} {value:.1f} s" for name, value in result["stage_seconds"].items())
                    engines = ", ".join(
                        f"{name} {figures.get('mean_pct')}% (fed {figures.get('fed_pct')}%)"
                        for name, figures in result["occupancy"].items()
                    )
                    print(
                        f"     stages: {stages}; time to first batch {result['time_to_first_batch_s']} s; engine "
                        f"occupancy (% of its cap): {engines or 'not reported'}; tracebacks in its output: "
                        f"{result['tracebacks']} ({result['console']})",
                        flush=True,
                    )
    means = {side: sum(values) / len(values) for side, values in rates.items()}
    for side, values in rates.items():
        print(f"{side:<4} mean {means[side]:5.2f} samples/s, spread {min(values):.2f}-{max(values):.2f}")
    print(f"ratio s2d / raw vLLM (samples/s, engine start included): {means['s2d'] / means['raw']:.3f}")


if __name__ == "__main__":
    main()
