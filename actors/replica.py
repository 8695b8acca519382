"""A generation replica: one vLLM engine in one Ray actor, running a method's prompt program.

The class is hosted two ways: as the callable class of a Ray Data `map_batches` actor pool
(data-parallel replicas fed by the streaming pipeline) and as a plain `ray.remote` actor (eval).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from engine.methods import get_method
from engine.models import resolve_model
from engine.program import Chain, SamplingRequest, run_method
from engine.spec import EngineSpec, JobSpec, SamplingSpec


def sampling_request(sampling: SamplingSpec) -> SamplingRequest:
    return SamplingRequest(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_tokens)


class GenerationReplica:
    def __init__(self, model: str, engine: dict[str, Any], seed: int, method: str | None = None,
                 request: SamplingRequest | None = None, max_lora_rank: int | None = None, replicas: int = 1):
        import torch

        from actors.vllm_backend import VLLMGenerator
        from cluster.resources import cpu_thread_env

        if not torch.cuda.is_available():
            # Before the engine starts: its core process inherits this environment.
            os.environ.update(cpu_thread_env(replicas, os.cpu_count() or 1))
        # Resolved here, on the replica's node: a packaged model is converted into that node's cache.
        self.model_path = resolve_model(model)
        self.generator = VLLMGenerator.load(self.model_path, EngineSpec(**engine), seed, max_lora_rank)
        self.method = get_method(method) if method else None
        self.request = request

    @classmethod
    def for_job(cls, spec: JobSpec, max_lora_rank: int | None = None) -> dict[str, Any]:
        """Constructor kwargs for a job's generation replica (plain data, so Ray can ship it)."""
        return dict(model=spec.model, engine=spec.engine.model_dump(), seed=spec.sampling.seed,
                    method=spec.method.name, request=sampling_request(spec.sampling), max_lora_rank=max_lora_rank,
                    replicas=spec.generation.replicas)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Ray Data stage: one row per input in, the same row plus its n sample texts and token counts out."""
        contexts = [{"question": str(q), "system1_prompt": str(p)} for q, p in zip(batch["question"], batch["prompt"])]
        chains = run_method(self.generator, self.method, contexts, self.request)
        return {
            "input_id": list(batch["input_id"]),
            "shard_id": [int(s) for s in batch["shard_id"]],
            "prompt": list(batch["prompt"]),
            "sample_texts": [[chain.final_text for chain in per_input] for per_input in chains],
            "sample_tokens": [[chain.num_tokens for chain in per_input] for per_input in chains],
        }

    def run(self, method: str, contexts: Sequence[dict[str, str]], request: SamplingRequest,
            adapter: str | None = None) -> list[list[Chain]]:
        """Direct use (eval): any method, any sampling, optionally through a LoRA adapter."""
        return run_method(self.generator, get_method(method), contexts, request, adapter)

    def ready(self) -> str:
        return self.model_path

    def stats(self) -> dict[str, int]:
        return dict(self.generator.stats)
