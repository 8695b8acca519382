"""The engine guard on real processes (no engine needed): a stand-in replica process with a stand-in engine child.
Killed with -9, the replica's child is killed by its guard within a second or two; a child that ends first (a clean
shutdown) lets the guard exit by itself; a process that only reuses a recorded pid is never touched, and a process is
known by its start since boot, which a change of the wall clock does not move."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from s2d.actors.engine_guard import guard

REPO = Path(__file__).resolve().parents[2]
# A "replica": starts a long-lived child (its "engine"), then its guard, prints both pids, and waits.
REPLICA = """
import subprocess, sys, time
from s2d.actors.engine_guard import start_guard
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
guard = start_guard()
print(engine.pid, guard.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _start_replica() -> tuple[subprocess.Popen, int, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    replica = subprocess.Popen([sys.executable, "-c", REPLICA], stdout=subprocess.PIPE, text=True, env=env)
    engine_pid, guard_pid = map(int, replica.stdout.readline().split())
    return replica, engine_pid, guard_pid


def test_the_engine_dies_with_its_replica_killed_with_minus_9():
    replica, engine_pid, guard_pid = _start_replica()
    try:
        assert psutil.Process(guard_pid).pid != replica.pid and os.getsid(guard_pid) != os.getsid(replica.pid)
        replica.send_signal(signal.SIGKILL)
        replica.wait()
        assert _gone(engine_pid, within_s=5), "the engine outlived its replica"
        assert _gone(guard_pid, within_s=5), "the guard did not exit after its work"
    finally:
        for pid in (engine_pid, guard_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_guard_exits_when_the_engine_ends_first():
    replica, engine_pid, guard_pid = _start_replica()
    try:
        os.kill(engine_pid, signal.SIGTERM)  # a clean shutdown of the engine
        assert _gone(guard_pid, within_s=5)
        assert replica.poll() is None  # the replica itself is left alone
    finally:
        replica.kill()
        replica.wait()


def test_a_reused_pid_is_never_killed():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(bystander.pid).create_time()
        # The guard recorded this pid with another start time: it is not the engine it was told about.
        guard(f"999999999:{started}", [f"{bystander.pid}:{started - 100}"], poll_s=0.05)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_process_is_named_by_its_start_since_boot_not_the_wall_clock(monkeypatch):
    from s2d.actors.engine_guard import _process, identity

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        named = identity(psutil.Process(bystander.pid))
        assert named.startswith(f"{bystander.pid}:t")  # Linux: clock ticks since boot
        # The boot time the kernel derives from the wall clock moves by a whole second when the clock is adjusted;
        # psutil's create_time() moves with it. The process is still the same one.
        boot = psutil.boot_time()
        monkeypatch.setattr(psutil, "boot_time", lambda: boot + 1.0)
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 1.0)
        assert _process(named) is not None
        assert _process(f"{bystander.pid}:t1") is None  # another start: a reused pid
    finally:
        bystander.kill()
        bystander.wait()


def test_a_failure_inside_a_task_group_is_named_by_its_leaf():
    from s2d.actors.failures import describe_failure

    inner = RuntimeError("EngineCore died")
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ExceptionGroup("nested", [inner])])
    assert describe_failure(group) == "RuntimeError: EngineCore died"
    assert describe_failure(ValueError("plain")) == "ValueError: plain"


def test_a_dead_engine_process_is_named_as_the_cause_of_the_engine_failure():
    """The replica names an engine process that exited (killed: a zombie until reaped, or gone) as the failure's
    cause, rather than the EngineDeadError of a request that was running then."""
    from s2d.actors.engine_watchdog import EngineProcessDied, dead_engine_process

    engines = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    children = [psutil.Process(engine.pid) for engine in engines]
    try:
        assert dead_engine_process(children) is None
        engines[1].kill()
        time.sleep(0.2)  # not reaped yet: a zombie
        dead = dead_engine_process(children)
        assert isinstance(dead, EngineProcessDied) and str(dead) == f"vLLM engine process {engines[1].pid} exited"
        engines[1].wait()  # reaped: gone
        assert str(dead_engine_process(children)) == f"vLLM engine process {engines[1].pid} exited"
    finally:
        for engine in engines:
            engine.kill()
            engine.wait()
