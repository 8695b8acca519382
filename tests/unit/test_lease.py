"""One writer per output (s2d.engine.data.lease): a live lease stops a second job with one line, a stale or dead
holder's lease is taken over, a job that lost its lease cannot commit."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from s2d.engine.data.lease import LEASE, Lease, LeaseLost, OutputBusy


def test_second_job_is_refused_with_the_holder_named(tmp_path):
    with Lease.acquire(tmp_path, heartbeat_s=0.2, timeout_s=30) as first:
        with pytest.raises(OutputBusy) as refused:
            Lease.acquire(tmp_path, timeout_s=30)
        line = str(refused.value)
        assert "\n" not in line and first.owner in line and f"pid {os.getpid()}" in line
        assert socket.gethostname() in line and "rerun to resume" in line
        first.check()
    assert not (tmp_path / LEASE).exists(), "released at the end"
    Lease.acquire(tmp_path).release()


def test_heartbeat_keeps_a_lease_alive_past_its_timeout(tmp_path):
    with Lease.acquire(tmp_path, heartbeat_s=0.1, timeout_s=0.5):
        time.sleep(1.0)
        with pytest.raises(OutputBusy):
            Lease.acquire(tmp_path, timeout_s=0.5)


def test_a_lease_without_heartbeat_is_taken_over_and_its_holder_cannot_commit(tmp_path):
    stalled = Lease.acquire(tmp_path, heartbeat_s=3600, timeout_s=0.3)
    time.sleep(0.5)
    taker = Lease.acquire(tmp_path, timeout_s=0.3)
    assert taker.taken_over["owner"] == stalled.owner
    with pytest.raises(LeaseLost, match="lost its lease"):
        stalled.check()
    taker.check()
    stalled.release()  # must not delete the new holder's lease
    assert json.loads((tmp_path / LEASE).read_text())["owner"] == taker.owner
    taker.release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"owner": "gone", "host": socket.gethostname(), "pid": dead.pid, "started": time.time()}
    (tmp_path / LEASE).write_text(json.dumps(record | {"heartbeat": time.time()}))
    with Lease.acquire(tmp_path, timeout_s=3600) as lease:
        assert lease.taken_over["owner"] == "gone"
