"""How a replica learns that its vLLM engine died: the engine's processes (its core and any workers, children of
the replica) watched from a thread, and the cause named for a failure whoever noticed it first.

The engine guard (s2d.actors.engine_guard) is the other direction: the engine's processes killed once the replica
is gone.
"""

from __future__ import annotations

import threading


class EngineProcessDied(RuntimeError):
    """vLLM's engine core (a child process of the replica) exited."""


def dead_engine_process(children: list) -> EngineProcessDied | None:
    """EngineProcessDied for the first of `children` (vLLM's engine processes) that is gone, None if all run."""
    import psutil

    for child in children:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            pass
        return EngineProcessDied(f"vLLM engine process {child.pid} exited")
    return None


def watch_engine_processes(children: list, on_failure, stopped: threading.Event, interval_s: float = 2.0) -> None:
    """Call `on_failure` when one of `children` (vLLM's engine core and its workers, as the engine started them;
    not the replica's engine guard) dies, until `stopped` is set (the replica closing its engine on purpose).

    vLLM's CPU build does not always notice: with its engine core killed, a replica was seen waiting forever
    for output. Watching the processes turns that hang into a restart.
    """

    def watch():
        while not stopped.wait(interval_s):
            dead = dead_engine_process(children)
            if dead is None:
                continue
            if not stopped.is_set():
                on_failure(dead)
            return

    threading.Thread(target=watch, name="s2d-engine-watchdog", daemon=True).start()
