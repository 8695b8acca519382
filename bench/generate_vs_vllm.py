"""Side by side: s2d's generation path on one replica actor vs a raw vLLM `LLM` in one process, in one run.

    .venv/bin/python bench/generate_vs_vllm.py            # after `make test`'s set-up; ~6 minutes on 2 cores

One-step generation (last-letter System 1 prompts, n=8, max_tokens 32, temperature 0.7, engine seed 0):
bench/multistep_vs_vllm.py's harness with method `system1` and two sides, each in its own process with the
same engine arguments (s2d's defaults) and thread binding (every core computing):

- raw: `vllm.LLM(...)` then one `LLM.chat` over all prompts, as a user would write it by hand;
- s2d: a local Ray, one `GenerationReplica` actor (the class the pipeline's Ray Data stage runs), fed the
  job's batches (`generation.batch_size` inputs), as many running at once as the pipeline runs per replica.

The s2d side sizes the runs from a measured warm-up so that each generates for about 60 s; the raw side runs
the same inputs. Engine start-up and warm-up are excluded. The last line is s2d / raw in output tokens/s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from multistep_vs_vllm import compare  # noqa: E402

if __name__ == "__main__":
    print(f"{os.cpu_count()} CPUs; 'flow' is s2d's replica (one step: nothing to flow)", flush=True)
    means = compare("system1", ["flow", "raw"], n=8, max_tokens=32, runs=2, seconds=60.0)
    print(f"ratio s2d / raw vLLM (output tokens/s): {means['flow'] / means['raw']:.3f}")
