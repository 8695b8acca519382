"""Side by side: vLLM CPU engine settings that s2d chooses, on the packaged model, in one run.

    .venv/bin/python bench/cpu_engine_settings.py            # after `make test`'s set-up; ~4 minutes on 2 cores

Each setting runs in its own process (vLLM reads its thread binding at engine start) over the same prompts,
n and max_tokens, after one warm-up call. Prints output tokens/s per setting; the last line is the ratio of
s2d's choice (float32 on a CPU without native bf16, every core computing) to vLLM's defaults (bfloat16,
one core kept for the front end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, N, MAX_TOKENS = 8, 4, 32  # small: bf16 runs at ~12 tok/s here

SETTINGS = {
    "vllm defaults (bf16, 1 core reserved)": {"dtype": "bfloat16", "env": {}},
    "float32, 1 core reserved": {"dtype": "float32", "env": {}},
    "s2d: float32, all cores": {"dtype": "float32", "env": "s2d"},
}


def measure(dtype: str) -> dict:
    from vllm import LLM, SamplingParams

    from s2d.engine.core.tasks import get_task
    from s2d.engine.data.models import resolve_model

    task = get_task("last_letter")
    llm = LLM(
        model=resolve_model("smollm2-135m"),
        dtype=dtype,
        max_model_len=1024,
        enforce_eager=True,
        gpu_memory_utilization=0.15,
        seed=0,
    )
    conversations = [
        [{"role": "user", "content": task.system1_prompt(item.question)}] for item in task.generate(PROMPTS, 0, "train")
    ]
    params = SamplingParams(n=N, temperature=0.7, max_tokens=MAX_TOKENS, ignore_eos=True)
    llm.chat(conversations[:2], params, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.token_ids) for output in outputs for o in output.outputs)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    from s2d.cluster.resources import cpu_thread_env

    results = {}
    for label, setting in SETTINGS.items():
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.update(cpu_thread_env(1, os.cpu_count() or 1) if setting["env"] == "s2d" else setting["env"])
        child = subprocess.run(
            [sys.executable, __file__, "--child", setting["dtype"]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            sys.exit(f"{label}: failed\n{child.stderr[-2000:]}")
        results[label] = json.loads(lines[-1].removeprefix("RESULT "))
        print(
            f"{label:<40} {results[label]['tokens']:>6} tokens in {results[label]['seconds']:6.1f} s "
            f"= {results[label]['tokens_per_s']:6.1f} tok/s",
            flush=True,
        )
    baseline, chosen = results["vllm defaults (bf16, 1 core reserved)"], results["s2d: float32, all cores"]
    print(f"ratio s2d settings / vllm defaults: {chosen['tokens_per_s'] / baseline['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(measure(sys.argv[2])), flush=True)
    else:
        main()
