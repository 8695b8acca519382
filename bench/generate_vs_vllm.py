"""Side by side: s2d's generation path on one replica actor vs a raw vLLM `LLM` in one process, in one run.

    .venv/bin/python bench/generate_vs_vllm.py            # after `make test`'s set-up; ~6 minutes on 2 cores

Both sides get the same prompts (last-letter System 1 prompts, chat-formatted), the same n, max_tokens,
temperature and engine seed, the same engine arguments (s2d's defaults: dtype, max_model_len, prefix
caching) and the same CPU thread binding (s2d's, every core computing), each in its own process:

- raw: `vllm.LLM(...)` then one `LLM.chat` over all prompts, as a user would write it by hand;
- s2d: a local Ray, one `GenerationReplica` actor (the class the pipeline's Ray Data stage runs), fed the
  job's batches (`generation.batch_size` inputs), as many running at once as the pipeline runs per replica.

Engine start-up is excluded on both sides (each runs one warm-up call first); the time is from the first
prompt sent to the last completion back. Prints output tokens/s of each; the last line is s2d / raw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS, N, MAX_TOKENS, TEMPERATURE, SEED = 128, 8, 32, 0.7, 0
JOB = {"model": "smollm2-135m", "out": "unused", "task": {"name": "last_letter", "num_inputs": INPUTS, "seed": 0},
       "method": {"name": "system1"},
       "sampling": {"n": N, "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS, "seed": SEED}}


def _spec():
    from engine.spec import parse_spec

    return parse_spec(JOB)


def _input_rows(spec) -> list[dict]:
    from engine.pipeline import input_rows

    return list(input_rows(spec, num_shards=1))


def measure_raw() -> dict:
    from vllm import LLM, SamplingParams

    from actors.vllm_backend import resolve_block_size, resolve_dtype
    from engine.models import resolve_model

    spec = _spec()
    engine = spec.engine
    llm = LLM(model=resolve_model(spec.model), dtype=resolve_dtype(engine.dtype), max_model_len=engine.max_model_len,
              gpu_memory_utilization=engine.gpu_memory_utilization, enforce_eager=engine.enforce_eager,
              enable_prefix_caching=engine.enable_prefix_caching, block_size=resolve_block_size(engine.block_size),
              seed=SEED, disable_log_stats=True)
    conversations = [[{"role": "user", "content": row["prompt"]}] for row in _input_rows(spec)]
    params = SamplingParams(n=N, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
    llm.chat(conversations[:2], params, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.token_ids) for output in outputs for o in output.outputs)
    return {"tokens": tokens, "samples": sum(len(output.outputs) for output in outputs), "seconds": seconds}


def measure_s2d() -> dict:
    import pyarrow as pa
    import ray

    from actors.replica import GenerationReplica
    from cluster.resources import replica_resources
    from engine.pipeline import BATCHES_PER_REPLICA

    spec = _spec()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    replica = ray.remote(GenerationReplica).options(
        **replica_resources(spec, 0), max_concurrency=BATCHES_PER_REPLICA).remote(
        **GenerationReplica.for_job(spec))
    ray.get(replica.ready.remote())
    rows = _input_rows(spec)
    size = spec.generation.batch_size
    batches = [pa.Table.from_pylist(rows[start:start + size]).to_pydict() for start in range(0, len(rows), size)]
    ray.get(replica.__call__.remote(pa.Table.from_pylist(rows[:2]).to_pydict()))  # warm-up
    before = ray.get(replica.stats.remote())
    started = time.perf_counter()
    in_flight, results = [], []
    for batch in batches:
        in_flight.append(replica.__call__.remote(batch))
        if len(in_flight) == BATCHES_PER_REPLICA:
            results.append(ray.get(in_flight.pop(0)))
    results.extend(ray.get(in_flight))
    seconds = time.perf_counter() - started
    after = ray.get(replica.stats.remote())
    ray.shutdown()
    samples = sum(len(texts) for result in results for texts in result["sample_texts"])
    return {"tokens": after["output_tokens"] - before["output_tokens"], "samples": samples, "seconds": seconds}


def main() -> None:
    from cluster.resources import cpu_thread_env

    print(f"{INPUTS} inputs x n={N}, max_tokens={MAX_TOKENS}, temperature={TEMPERATURE}, seed={SEED}; "
          f"{os.cpu_count()} CPUs", flush=True)
    results = {}
    for side in ("raw", "s2d"):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # The raw side gets the binding s2d's lone replica sets for itself, so both compute on every core.
        env.update(cpu_thread_env(1, os.cpu_count() or 1) if side == "raw" else {})
        child = subprocess.run([sys.executable, __file__, "--side", side], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            sys.exit(f"{side}: failed\n{child.stderr[-3000:]}")
        result = results[side] = json.loads(lines[-1].removeprefix("RESULT "))
        print(f"{side:<4} {result['samples']:>5} samples, {result['tokens']:>6} output tokens in "
              f"{result['seconds']:6.1f} s = {result['tokens'] / result['seconds']:6.1f} tok/s", flush=True)
    raw, s2d = (results[side]["tokens"] / results[side]["seconds"] for side in ("raw", "s2d"))
    print(f"ratio s2d / raw vLLM (output tokens/s): {s2d / raw:.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        print("RESULT " + json.dumps(measure_raw() if sys.argv[2] == "raw" else measure_s2d()), flush=True)
    else:
        main()
