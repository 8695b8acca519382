"""One writer per output (s2d.engine.data.lease): a live lease stops a second job with one line, a stale or dead
holder's lease is taken over, a job that lost its lease cannot commit."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from s2d.engine.data.lease import EPOCH, LEASE, Lease, LeaseLost, OutputBusy


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


def test_every_grant_has_a_higher_epoch_kept_past_release_and_the_fence_names_it(tmp_path):
    first = Lease.acquire(tmp_path)
    assert first.epoch == 1 and first.fence == f"e1-{first.owner}"
    assert json.loads((tmp_path / LEASE).read_text())["epoch"] == 1
    first.release()
    assert not (tmp_path / LEASE).exists() and (tmp_path / EPOCH).read_text() == "1"
    stalled = Lease.acquire(tmp_path, heartbeat_s=3600, timeout_s=0.2)
    time.sleep(0.4)
    taker = Lease.acquire(tmp_path, timeout_s=0.2)
    assert (stalled.epoch, taker.epoch) == (2, 3)
    with pytest.raises(LeaseLost):
        stalled.check()
    taker.release()
    stalled.release()
    assert Lease.acquire(tmp_path).epoch == 4


def test_a_lease_of_an_s2d_before_epochs_is_taken_over_at_epoch_one(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"owner": "gone", "host": socket.gethostname(), "pid": dead.pid, "started": time.time()}
    (tmp_path / LEASE).write_text(json.dumps(record | {"heartbeat": time.time()}))  # no epoch, no .lease.epoch
    with Lease.acquire(tmp_path) as lease:
        assert lease.epoch == 1 and lease.taken_over["owner"] == "gone"


def test_a_holder_with_the_same_owner_at_another_epoch_is_not_this_grant(tmp_path):
    with Lease.acquire(tmp_path) as lease:
        record = json.loads((tmp_path / LEASE).read_text())
        (tmp_path / LEASE).write_text(json.dumps(record | {"epoch": lease.epoch + 1}))
        with pytest.raises(LeaseLost):
            lease.check()


def test_a_job_that_makes_no_progress_stops_renewing_and_is_taken_over(tmp_path):
    """Inside watching_progress the heartbeat proves progress: a hung loop lets the lease go stale."""
    hung = Lease.acquire(tmp_path, heartbeat_s=0.05, timeout_s=0.5)
    with hung.watching_progress(within_s=0.2):
        time.sleep(1.2)  # no progress reported: after 0.2 s the heartbeat stops renewing
        taker = Lease.acquire(tmp_path, timeout_s=0.5)
        assert taker.taken_over["owner"] == hung.owner
        with pytest.raises(LeaseLost):
            hung.check()
    taker.release()
    hung.release()


def test_a_job_that_reports_progress_keeps_its_lease_and_outside_a_watch_liveness_is_enough(tmp_path):
    with Lease.acquire(tmp_path, heartbeat_s=0.05, timeout_s=0.5) as busy:
        with busy.watching_progress(within_s=0.2):
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                busy.progress()
                time.sleep(0.05)
            with pytest.raises(OutputBusy):
                Lease.acquire(tmp_path, timeout_s=0.5)
        time.sleep(1.0)  # no longer watched (planning, train, eval): the heartbeat renews while the process lives
        with pytest.raises(OutputBusy):
            Lease.acquire(tmp_path, timeout_s=0.5)
        busy.check()


def test_no_takeover_comes_between_the_fenced_check_and_the_holders_publish(tmp_path):
    """`fenced` holds the lease's lock: a job taking over a stale lease waits until the holder's publish is done."""
    stalled = Lease.acquire(tmp_path, heartbeat_s=3600, timeout_s=0.2)
    time.sleep(0.4)  # stale already: only the lock keeps a taker out
    order: list[str] = []
    taken: list[Lease] = []
    with stalled.fenced():
        taker = threading.Thread(
            target=lambda: (taken.append(Lease.acquire(tmp_path, timeout_s=0.2)), order.append("taken"))
        )
        taker.start()
        time.sleep(0.3)
        order.append("published")
    taker.join(timeout=10)
    assert order == ["published", "taken"]
    with pytest.raises(LeaseLost):
        with stalled.fenced():
            pass
    taken[0].release()
    stalled.release()
