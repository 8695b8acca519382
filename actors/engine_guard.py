"""An engine never outlives its replica: a small guard process kills vLLM's engine processes once the replica is gone.

vLLM's engine core (and its workers) are child processes of the replica's Ray worker. When that worker dies without
running Python (kill -9, the OOM killer, the driver's process group killed with it, a lost raylet), nothing stops
them: they were seen holding 4.3 GiB each, with no parent, until every rerun failed at engine start for lack of
memory (or, on a GPU, of accelerator memory). Ray's own cleanup of a worker's children is off for the replicas
(actors/replica.py says why), and it could not run anyway when the raylet itself is killed.

So each replica starts one guard, in a session of its own (a signal to the job's process group does not reach it):
it polls the replica's process and, when it has ended, kills the engine processes recorded at start (each checked by
its start, so a reused pid is never touched), then exits. It also exits when the engine processes end first (a
clean shutdown). `python -m s2d.actors.engine_guard REPLICA ENGINE_PROCESS ...`, each named by `identity()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5


def start_guard(engine: list[psutil.Process] | None = None, replica_pid: int | None = None) -> subprocess.Popen | None:
    """Guard `engine` (vLLM's engine processes; by default the calling process's current children, started by
    now); None if there is none."""
    replica = psutil.Process(replica_pid or os.getpid())
    engine = replica.children(recursive=True) if engine is None else engine
    if not engine:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "s2d.actors.engine_guard", identity(replica), *map(identity, engine)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=None,  # the replica's log: a guard that fails says why there (it writes nothing otherwise)
        start_new_session=True,
        close_fds=True,
    )


def identity(process: psutil.Process) -> str:
    """`pid:start`, which names one process for its whole life and never a later one that reuses its pid. On Linux
    the start is in clock ticks since boot (/proc/PID/stat), exact and untouched by the wall clock: psutil's
    create_time() adds the boot time the kernel derives from the wall clock, whole seconds that can move by one
    when the clock is adjusted, and a guard comparing those took its live replica and engine for gone processes."""
    ticks = _start_ticks(process.pid)
    return f"{process.pid}:t{ticks}" if ticks is not None else f"{process.pid}:{process.create_time()!r}"


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()  # after the name, which may hold spaces
        return int(fields[19])  # field 22 of proc(5), starttime; the 3rd field is fields[0]
    except (OSError, IndexError, ValueError):
        return None


def _process(spec: str) -> psutil.Process | None:
    """The process `identity()` named, if it still runs (and is not a zombie, or a later process with its pid)."""
    pid, _, started = spec.partition(":")
    try:
        process = psutil.Process(int(pid))
        if started.startswith("t"):
            same = _start_ticks(process.pid) == int(started[1:])
        else:
            same = abs(process.create_time() - float(started)) <= 0.01
        if not same or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def guard(replica: str, engine: list[str], poll_s: float = POLL_S) -> None:
    while True:
        alive = [process for process in map(_process, engine) if process is not None]
        if not alive:
            return  # the engine ended first: a clean shutdown
        if _process(replica) is None:
            for process in alive:
                try:
                    process.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            return
        time.sleep(poll_s)


if __name__ == "__main__":
    guard(sys.argv[1], sys.argv[2:])
