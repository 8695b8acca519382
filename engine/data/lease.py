"""One writer per output: an exclusive lease on `<out>`, held by the job that generates into it.

Two `s2d generate` on one `out` (a double submit, a retry script racing a live job) must never interleave
their commits. The job takes `<out>/.lease.json` before it reads or writes anything else there: owner (a
job id), host, pid, start time, heartbeat. A second job finds a live lease and stops at once with one line
naming the holder and what to do. The holder rewrites the heartbeat every `heartbeat_s`; a lease whose
heartbeat is older than `timeout_s` (its holder died or hangs), or whose holder is a dead process on this
host (a kill -9: taken over at once), is taken over.

Fencing. Each grant of the lease has an epoch, one more than any before it on this output (kept in
`<out>/.lease.epoch`, which outlives the lease file; read and written under the lock). The job's fencing token
(`fence`: epoch and job id) travels with its work: its workers write only under names scoped by it (parts under
`.parts/<fence>/`, shard files as hidden staged names), and only the holder publishes, under the lock, after
checking that the lease is still its own at its epoch (`fenced`). A replaced job's late writes land under its
own token, which nobody reads or publishes, so they never become visible; the next holder deletes them.

The heartbeat proves progress, not only liveness: inside `watching_progress` (the generate stage's commit
loop) it renews only while the job reports progress (`progress`: a part arrived, a shard was written or
committed) within the window, so a job whose loop hangs lets its lease go stale and can be taken over. Outside
it (planning, train, eval) the heartbeat renews while the process lives.

Taking the lease is a read-check-write. On a local or mounted filesystem an flock on `<out>/.lease.lock`
makes that step atomic across processes (and across hosts on filesystems with network locks, such as NFSv4);
on an object store (s3://, gs://) there is no lock: the job writes its lease, waits, and reads it back, which
narrows the race to the store's write visibility. Mounted paths are the supported way to share one `out`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from s2d.engine.data.storage import OutputLocation

LEASE = ".lease.json"
LOCK = ".lease.lock"
EPOCH = ".lease.epoch"  # the last epoch granted on this output: outlives the lease file, so epochs never repeat
HEARTBEAT_S = float(os.environ.get("S2D_LEASE_HEARTBEAT_S", 10))
TIMEOUT_S = float(os.environ.get("S2D_LEASE_TIMEOUT_S", 120))
# A watched job that reports no progress for this long stops renewing its heartbeat. Generous: a replica's engine
# start or a long batch reports nothing (issue 25 part 6 bounds a hung batch itself).
PROGRESS_S = float(os.environ.get("S2D_LEASE_PROGRESS_S", 600))


class OutputBusy(RuntimeError):
    """Another live job holds `<out>`'s lease."""


class LeaseLost(RuntimeError):
    """This job's lease was taken over: it must not commit any more."""


def describe(holder: dict[str, Any], now: float) -> str:
    age = max(now - float(holder.get("heartbeat", 0)), 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("started", 0))))
    return (
        f"job {holder.get('owner', '?')} ({holder.get('command', 's2d')}, pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, started {started}, last heartbeat {age:.0f} s ago)"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def epoch_of(holder: dict[str, Any] | None) -> int:
    """A lease record's epoch (0: none, or a lease written before epochs)."""
    try:
        return max(int((holder or {}).get("epoch", 0)), 0)
    except (TypeError, ValueError):
        return 0


def is_stale(holder: dict[str, Any], now: float, timeout_s: float) -> bool:
    if now - float(holder.get("heartbeat", 0)) > timeout_s:
        return True
    # On this host a dead pid is certain: take over at once (the rerun after a kill -9 need not wait).
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0)))


@dataclass
class Lease:
    location: OutputLocation
    owner: str
    command: str
    heartbeat_s: float = HEARTBEAT_S
    timeout_s: float = TIMEOUT_S
    started: float = field(default_factory=time.time)
    taken_over: dict[str, Any] | None = None  # the stale lease this job replaced, if any
    epoch: int = 0  # this grant's fencing epoch (set when acquired)
    _lost: str | None = None
    _progress_window: float | None = None  # seconds; None: not watched, the heartbeat proves liveness only
    _last_progress: float = 0.0  # time.monotonic() of the last progress report
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def acquire(
        cls, out: Any, command: str = "s2d generate", heartbeat_s: float = HEARTBEAT_S, timeout_s: float = TIMEOUT_S
    ) -> Lease:
        location = OutputLocation.of(out)
        location.makedirs()
        lease = cls(location, uuid.uuid4().hex[:12], command, heartbeat_s, timeout_s)
        with lease._locked():
            now = time.time()
            holder = lease._read()
            if holder and holder.get("owner") != lease.owner and not is_stale(holder, now, timeout_s):
                raise OutputBusy(
                    f"{location.root} is being written by {describe(holder, now)}; wait for it to end "
                    f"(`s2d status {location.root}` shows its progress) and rerun to resume, or stop it first; "
                    f"a lease without a heartbeat for {timeout_s:.0f} s is taken over"
                )
            lease.taken_over = holder
            lease.epoch = max(lease._last_epoch(), epoch_of(holder)) + 1
            lease.location.write_bytes_atomic(str(lease.epoch).encode(), EPOCH)
            lease._write(now)
        if not location.is_local:
            # No lock on an object store: let a racing writer's lease land, then see whose survived.
            time.sleep(min(2.0, heartbeat_s))
            holder = lease._read()
            if not holder or holder.get("owner") != lease.owner:
                raise OutputBusy(f"{location.root} was taken by {describe(holder or {}, time.time())} at the same time")
        lease._thread = threading.Thread(target=lease._beat, name="s2d-lease-heartbeat", daemon=True)
        lease._thread.start()
        return lease

    @property
    def fence(self) -> str:
        """This grant's fencing token, which scopes every name its workers write: `e<epoch>-<job>`."""
        return f"e{self.epoch}-{self.owner}"

    def check(self) -> None:
        """Raise LeaseLost unless this job still holds the lease at its epoch (called before every commit)."""
        if self._lost is None:
            self._verify(self._read())
        if self._lost is not None:
            raise LeaseLost(
                f"this job lost its lease on {self.location.root} to {self._lost} (its heartbeat stalled, or it made "
                f"no progress, past {self.timeout_s:.0f} s); it stops without committing more; committed shards are "
                "kept"
            )

    @contextlib.contextmanager
    def fenced(self):
        """Hold the lease's lock while the holder publishes: raises LeaseLost unless the lease is still this job's
        at its epoch, and no takeover can come between that check and the writes inside (the lock excludes it)."""
        with self._locked():
            self.check()
            yield

    def progress(self) -> None:
        """The job moved on (a part arrived, a shard was written or committed): the heartbeat may renew."""
        self._last_progress = time.monotonic()

    @contextlib.contextmanager
    def watching_progress(self, within_s: float = PROGRESS_S):
        """While inside, the heartbeat renews only if `progress` was reported within `within_s` seconds."""
        self.progress()
        self._progress_window = within_s
        try:
            yield self
        finally:
            self._progress_window = None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError), self._locked():
            holder = self._read()
            if holder and holder.get("owner") == self.owner:
                self.location.delete(LEASE)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def stalled_s(self) -> float | None:
        """Seconds since the last progress, once past the watched window (else None): the job hangs somewhere."""
        idle = time.monotonic() - self._last_progress
        return idle if self._progress_window is not None and idle > self._progress_window else None

    def _progressing(self) -> bool:
        return self.stalled_s() is None

    def _verify(self, holder: dict[str, Any] | None) -> None:
        """Record the loss when `holder` is not this job at its epoch."""
        if holder and holder.get("owner") == self.owner and epoch_of(holder) == self.epoch:
            return
        self._lost = describe(holder, time.time()) if holder else "nobody (the lease file is gone)"

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._progressing():
                continue  # a hung job must not keep its lease alive: it goes stale and can be taken over
            try:
                with self._locked():
                    self._verify(self._read())
                    if self._lost is not None:
                        return
                    self._write(time.time())
            except OSError:
                continue  # a transient storage error: the next beat retries; the timeout is generous

    def _last_epoch(self) -> int:
        """The last epoch granted here (0: none yet, or an output from before epochs)."""
        try:
            return max(int((self.location.read_bytes(EPOCH) or b"0").strip() or 0), 0)
        except ValueError:
            return 0  # garbage: epochs restart, and the job id in every fence still keeps names apart

    def _read(self) -> dict[str, Any] | None:
        data = self.location.read_bytes(LEASE)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # a torn file cannot happen with atomic writes; treat garbage as no lease

    def _write(self, now: float) -> None:
        record = {
            "owner": self.owner,
            "command": self.command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": now,
            "timeout_s": self.timeout_s,
            "epoch": self.epoch,
        }
        self.location.write_bytes_atomic(json.dumps(record).encode(), LEASE)

    @contextlib.contextmanager
    def _locked(self):
        if not self.location.is_local:
            yield
            return
        import fcntl

        with open(self.location.path(LOCK), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
