"""vLLM's engine core forked from a process that imported torch and vLLM while the replica was importing them.

AsyncLLM always starts its engine core as a process of its own, and inside a Ray actor (and on its CPU platform)
vLLM starts it with `spawn`: a fresh interpreter that imports torch and vLLM again once the replica has imported
them, one after the other (5.1 of a CPU replica's 11.7 s of engine start here, bench/RESULTS.md). A replica that
starts this server before its own imports has the core's imports done beside them (on another core); the engine
core is then forked from the server, a process that ran nothing but imports (one thread: safe to fork, unlike the
replica with Ray's threads).

What `spawn` gives a child that a fork from an earlier process would not, the engine gets all the same:
- the environment at the moment vLLM starts the process (vLLM sets OMP_NUM_THREADS, RAY_ADDRESS and others around
  `Process.start()`): `EngineProcess` carries the parent's environment and sets it before the engine runs;
- the libraries vLLM's CPU platform preloads into its child (`LD_PRELOAD`: tcmalloc, torch's OpenMP runtime),
  which only an exec can load: the server is started with them (`compat_vllm.cpu_preload`).

The server is Python's multiprocessing fork server, one per replica process. It lives as long as the engine core:
vLLM learns of the core's exit through it (the server reaps it), and it exits once the replica and the core are
both gone; the replica's engine guard and watchdog track the core, not it. Its cost is memory: ~350 MiB more per
replica (proportional set size, the imports it shares with the core counted once). Only the CPU build is served
this way, where it was measured; on a GPU vLLM keeps its own start (`S2D_ENGINE_FORKSERVER=0` keeps it on CPU too).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
from dataclasses import dataclass

from s2d.actors import compat_vllm

# What the server imports before its fork: the engine core's module pulls in torch and most of vLLM, and the core
# runs its CPU worker in its own process (vllm_backend.cpu_engine_env); the model's module it imports as it starts.
PRELOAD = ["vllm.v1.engine.core", "vllm.v1.executor.uniproc_executor", "vllm.v1.worker.cpu_worker"]


class EngineProcess(multiprocessing.context.ForkServerProcess):
    """A process forked from the server that runs with the environment its parent had when it started it."""

    def start(self) -> None:
        self._environment = dict(os.environ)  # pickled with the process, to the server's new child
        super().start()

    def run(self) -> None:
        _claim_process_title()
        for name in set(os.environ) - set(self._environment):
            del os.environ[name]
        for name, value in self._environment.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        super().run()


def _claim_process_title() -> None:
    """Let setproctitle take the process's argv area while the environment is still the one exec gave it: changed
    afterwards, it was seen to leave vLLM's title (VLLM::EngineCore, how tools and the fault tests find the engine)
    unset. vLLM sets the title with setproctitle where it is installed."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.getproctitle()


class EngineContext(multiprocessing.context.ForkServerContext):
    Process = EngineProcess


def wanted() -> bool:
    return os.environ.get("S2D_ENGINE_FORKSERVER", "1") != "0"


@dataclass(frozen=True)
class EngineServer:
    """A started fork server; `preload` is the LD_PRELOAD it (and every engine core forked from it) runs with."""

    preload: str

    def serve_vllm(self) -> bool:
        """Once vLLM is imported: it starts its engine cores from this server (False: vLLM's own start is kept)."""
        return compat_vllm.start_engine_processes_with(EngineContext())

    def preload_mismatch(self) -> str | None:
        """Once the engine started: a line for the replica's log if vLLM wanted other libraries preloaded into its
        engine core than the server has (vLLM's CPU platform set LD_PRELOAD in this process for its child)."""
        wanted_by_vllm = os.environ.get("LD_PRELOAD", "")
        if wanted_by_vllm == self.preload:
            return None
        return (
            f"s2d: vLLM preloads {wanted_by_vllm!r} into its engine core, the fork server has {self.preload!r}: "
            "the engine may run slower (S2D_ENGINE_FORKSERVER=0 keeps vLLM's own start)"
        )


def start_server() -> EngineServer:
    """Start the fork server now: its imports run beside the caller's. Started with the libraries vLLM's CPU
    platform will want preloaded into its engine core, which only an exec loads."""
    preload = compat_vllm.cpu_preload(os.environ.get("LD_PRELOAD", ""))
    multiprocessing.forkserver.set_forkserver_preload(PRELOAD)
    saved = os.environ.get("LD_PRELOAD")
    if preload:
        os.environ["LD_PRELOAD"] = preload
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = saved
    return EngineServer(preload)
