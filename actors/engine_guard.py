"""An engine never outlives its replica: a small guard process kills vLLM's engine processes once the replica is gone.

vLLM's engine core (and its workers) are child processes of the replica's Ray worker. When that worker dies without
running Python (kill -9, the OOM killer, the driver's process group killed with it, a lost raylet), nothing stops
them: they were seen holding 4.3 GiB each, with no parent, until every rerun failed at engine start for lack of
memory (or, on a GPU, of accelerator memory). Ray's own cleanup of a worker's children is off for the replicas
(actors/replica.py says why), and it could not run anyway when the raylet itself is killed.

So each replica starts one guard, in a session of its own (a signal to the job's process group does not reach it):
it polls the replica's process and, when it has ended, kills the engine processes recorded at start (each checked by
its start time, so a reused pid is never touched), then exits. It also exits when the engine processes end first (a
clean shutdown). `python -m s2d.actors.engine_guard REPLICA_PID PID:START_TIME ...`
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5


def start_guard(replica_pid: int | None = None) -> subprocess.Popen | None:
    """Guard the calling process's current children (vLLM's engine processes, started by now); None if it has none."""
    replica = psutil.Process(replica_pid or os.getpid())
    engine = [f"{child.pid}:{child.create_time()!r}" for child in replica.children(recursive=True)]
    if not engine:
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "s2d.actors.engine_guard", f"{replica.pid}:{replica.create_time()!r}", *engine],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _process(spec: str) -> psutil.Process | None:
    """The process `pid:start_time` names, if it still runs (and is not a zombie, or a later process with its pid)."""
    pid, _, started = spec.partition(":")
    try:
        process = psutil.Process(int(pid))
        if abs(process.create_time() - float(started)) > 0.01 or process.status() == psutil.STATUS_ZOMBIE:
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
