"""The driver's side of shard commits: a few integers per shard, the shard-writing tasks in flight, and the
manifest, rewritten once per batch of finished shards (s2d.engine.data.shard_tasks writes the shards).

Fenced: the workers write under the job's lease fence only (its parts folder, staged shard names); at each
commit the driver, holding the lease's lock at its epoch (s2d.engine.data.lease.Lease.fenced), renames the staged
files into place and rewrites the manifest, so a job whose lease was taken over publishes nothing. The commit
loop is the lease's proof of progress: each part, finished shard write and commit is reported to it.

The shard writes run on the job's own writer processes (`ShardWriter`: one per shard write in flight), not as Ray
tasks: at a job's tail, when its last shards are ready at once, Ray had no idle worker for the tasks and started
new ones (1-2 s each on two cores, bench/RESULTS.md) while the job waited. The writers start with the job,
beside the engines' start: a writer started at the first part took its worker process's start (1.1-1.4 CPU-s
on two cores) from the engines' batches.

The manifest is one JSON file rewritten whole at each commit (the single commit point). Its cost grows with
the shards committed, so commits are spaced to keep rewriting it a small share of the driver's time: at least
COMMIT_INTERVAL_S apart, and at least COMMIT_COST_FACTOR times as long as the last rewrite took.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from s2d.engine.core.spec import JobSpec
from s2d.engine.data.inputs import InputPlan
from s2d.engine.data.lease import PROGRESS_S, Lease
from s2d.engine.data.manifest import Manifest, write_manifest
from s2d.engine.data.shard_tasks import WrittenShard, part_folder, publish_shard, stage_shard
from s2d.engine.data.shards import PARTS
from s2d.engine.data.storage import OutputLocation

SHARD_WRITES_IN_FLIGHT = 4  # shard writes at once, one per writer process (each a shard's rows: bounded memory and I/O)
WRITE_RETRIES = 3  # a writer process that dies is restarted and its write run again, up to this many times
COMMIT_INTERVAL_S = 1.0  # finished shards are committed together, at most one manifest rewrite per interval
COMMIT_COST_FACTOR = 20  # ...and a rewrite at most 1/20 of the driver's time

T = TypeVar("T")


class JobStalled(RuntimeError):
    """The commit loop saw no progress for the lease's progress window (s2d.engine.data.lease)."""


class ShardCommits:
    """The driver's side of shard commits: per shard a few integers (inputs expected, rows seen, state),
    the shard-writing tasks in flight, and the manifest, rewritten once per batch of finished shards."""

    def __init__(self, location: OutputLocation, manifest: Manifest, lease: Lease, spec: JobSpec, num_shards: int):
        self.location, self.manifest, self.lease, self.spec = location, manifest, lease, spec
        self.num_shards = num_shards
        self.done = np.zeros(num_shards, bool)
        self.done[list(manifest.shards)] = True
        self.expected = np.zeros(num_shards, np.int64)  # generated inputs per shard
        self.received = np.zeros(num_shards, np.int64)  # rows seen per shard, a retry's repeats included
        self.writing = np.zeros(num_shards, bool)
        self.waiting: deque[int] = deque()  # ready to write, over the in-flight bound
        self.in_flight: dict[Any, tuple[int, Any]] = {}  # a shard write's ref -> its shard and the writer running it
        self.writers: list[Any] = []
        self.received_at_launch: dict[int, int] = {}
        self.finished: dict[int, WrittenShard] = {}
        self.last_commit = 0.0
        self.last_commit_seconds = 0.0
        self.duplicates_dropped = 0
        self.job, self.fence = lease.owner, lease.fence
        self._watching = contextlib.ExitStack()

    def start_writers(self, ray, writers: int = SHARD_WRITES_IN_FLIGHT) -> None:
        """Start the job's writer processes: `writers` of them, at most SHARD_WRITES_IN_FLIGHT and one per shard
        left to write (once: later calls keep them)."""
        if self.writers:
            return
        self.ray = ray
        count = max(1, min(writers, SHARD_WRITES_IN_FLIGHT, int((~self.done).sum())))
        writer = ray.remote(ShardWriter).options(
            num_cpus=0, max_restarts=WRITE_RETRIES, max_task_retries=WRITE_RETRIES, scheduling_strategy="SPREAD"
        )
        # stage_shard as this module has it now (a test may replace it to hold a write).
        self.writers = [writer.remote(stage_shard) for _ in range(count)]

    def start(self, ray, plan: InputPlan) -> None:
        """From here shards are written and committed as their rows arrive, by the writers `start_writers` started
        (as many as it starts by default when none were)."""
        self.start_writers(ray)
        # From here the heartbeat renews only while this loop reports progress (until finish).
        self._watching.enter_context(self.lease.watching_progress(progress_window(self.spec)))
        self.expected[:] = plan.valid
        # Shards with nothing to generate (empty, or only quarantined inputs) are written at once.
        for shard in np.flatnonzero((plan.valid == 0) & ~self.done).tolist():
            self._ready(shard)

    def pending_shards(self) -> list[int]:
        """Shards with inputs to generate, not committed (once `start` has the plan)."""
        return np.flatnonzero(~self.done & (self.expected > 0)).tolist()

    def uncommitted_shards(self) -> list[int]:
        """Shards not committed, whatever their inputs (before the plan is known)."""
        return np.flatnonzero(~self.done).tolist()

    def add_part(self, shard: int, rows: int, part: str) -> bool:
        """Count a part's rows; False when the shard is already committed (a retried batch's copies)."""
        self.lease.progress()
        if self.done[shard]:
            self.duplicates_dropped += rows
            self.location.delete(PARTS, part_folder(shard, self.fence), part)
            return False
        self.received[shard] += rows
        if self.received[shard] >= self.expected[shard] and not self.writing[shard]:
            self._ready(shard)
        return True

    def _ready(self, shard: int) -> None:
        self.writing[shard] = True
        self.waiting.append(shard)
        self._launch()

    def _launch(self) -> None:
        spec = self.spec
        while self.waiting and len(self.in_flight) < len(self.writers):
            shard = self.waiting.popleft()
            busy = [writer for _, writer in self.in_flight.values()]
            writer = next(writer for writer in self.writers if writer not in busy)
            ref = writer.stage.remote(
                spec.out,
                shard,
                self.num_shards,
                int(self.expected[shard]),
                spec.output.keep_samples,
                self.job,
                spec.method.name,
                spec.model,
                self.fence,
            )
            self.in_flight[ref] = shard, writer
            self.received_at_launch[shard] = int(self.received[shard])

    def poll(self, wait: bool = False) -> None:
        """Collect finished shard writes (all of them when `wait`), and commit what is due. Called at every tick
        of the commit loop, results or not: a job that made no progress for the lease's window stops here
        (JobStalled) instead of hanging, its engines stopped by the stage's teardown and its output resumable."""
        self._check_progress()
        while self.in_flight:
            ready, _ = self.ray.wait(
                list(self.in_flight), num_returns=len(self.in_flight), timeout=COMMIT_INTERVAL_S if wait else 0
            )
            if wait and not ready:
                self._check_progress()  # a shard write that hangs must not hold the job forever either
                continue
            if ready:
                self.lease.progress()
            for ref in ready:
                shard, _ = self.in_flight.pop(ref)
                written = _shard_result(self.ray, ref)
                since_launch = self.received[shard] - self.received_at_launch.pop(shard)
                if written.entry is None:  # a retry's repeats were counted as new rows: wait for the rest
                    self.writing[shard] = False
                    self.received[shard] = written.arrived + since_launch
                    if self.received[shard] >= self.expected[shard]:
                        self._ready(shard)
                else:
                    self.finished[shard] = written
            self._launch()
            if not wait:
                break
        self.commit(force=wait)

    def _check_progress(self) -> None:
        if (stalled := self.lease.stalled_s()) is not None:
            raise JobStalled(
                f"no progress for {stalled:.0f} s (no part arrived, no shard was written or committed): a replica "
                "or a pipeline task hangs; committed shards are kept, rerun the same command to resume"
            )

    def commit(self, force: bool = False) -> None:
        spacing = max(COMMIT_INTERVAL_S, COMMIT_COST_FACTOR * self.last_commit_seconds)
        if not self.finished or (not force and time.monotonic() - self.last_commit < spacing):
            return
        started = time.monotonic()
        # Under the lease's lock, at this job's epoch: a job that lost its lease publishes nothing, and no
        # takeover comes between the check and the manifest rewrite.
        with self.lease.fenced():
            for shard, written in self.finished.items():
                publish_shard(self.location, written)
                self.duplicates_dropped += written.duplicates_dropped
                self.manifest.shards[shard] = written.entry
                self.done[shard] = True
            write_manifest(self.location, self.manifest)  # the commit point
        self.lease.progress()
        for shard in self.finished:
            self.location.delete(PARTS, part_folder(shard, self.fence))
        self.finished = {}
        self.last_commit = time.monotonic()
        self.last_commit_seconds = self.last_commit - started

    def finish(self) -> None:
        try:
            with self._watching:
                self.poll(wait=True)
        finally:
            self.close()
        missing = np.flatnonzero(~self.done).tolist()
        if missing:
            raise RuntimeError(f"{len(missing)} shards never completed (first: {missing[:5]}); rerun to resume")

    def close(self) -> None:
        """Stops the writer processes (a write still running is cut short: its files are staged under the job's
        fence, never published, and the next job that opens the output deletes them)."""
        writers, self.writers = self.writers, []
        for writer in writers:
            self.ray.kill(writer)


class ShardWriter:
    """One of a job's shard-writing processes (a Ray actor): `stage` is `write`, s2d.engine.data.shard_tasks's
    stage_shard."""

    def __init__(self, write: Callable[..., WrittenShard]):
        self._write = write

    def stage(self, *args: Any) -> WrittenShard:
        return self._write(*args)


def progress_window(spec: JobSpec) -> float:
    """How long the commit loop may see nothing (no part, no shard written) before the job counts as hung: the
    lease's PROGRESS_S, or longer when one batch may legitimately take longer (a batch that times out and its one
    retry, with an engine restart between)."""
    batch_timeout = getattr(spec.generation, "batch_timeout_s", None)  # issue 25 part 6's limit, where present
    return max(PROGRESS_S, 2 * batch_timeout + 120) if batch_timeout else PROGRESS_S


def _shard_result(ray, ref) -> WrittenShard:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        from s2d.engine.data.storage import OutputError

        if isinstance(error.cause, OutputError):
            raise error.cause from None  # a full disk or an unwritable out: its own one line
        raise


_END = object()  # with_ticks: the items ran out (or failed)


def with_ticks(items: Iterable[T], interval: float) -> Iterator[T | None]:
    """`items`, with a None whenever the next one takes longer than `interval` seconds to come, so that the
    driver commits finished shards on time while the pipeline has nothing for it (long batches, a slow
    replica, the tail of a job). A thread pulls the items one ahead at most: backpressure is unchanged."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not hand_over((item, None)):
                    return
            hand_over((_END, None))
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer's thread
            hand_over((_END, error))

    threading.Thread(target=pull, name="s2d-pipeline-output", daemon=True).start()
    try:
        while True:
            try:
                item, error = handoff.get(timeout=interval)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
