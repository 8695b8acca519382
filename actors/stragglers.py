"""Stragglers re-issued (issue 26): at a job's tail, a batch held far longer than the pool's median is run again by
another replica, beside its last batches.

Ray Data owns dispatch and never re-issues a batch, so the re-issue happens beside it, without touching its data
path: the replica that took a batch from Ray Data (its holder) is the only one that ever returns its rows, so the
exactly-once accounting is Ray Data's as before.

Ray Data releases a replica with no batch in flight once every input has been handed out, so an idle replica is
gone before it could help. The helper is therefore a replica's *last* batch: once it has run, and the job is at its
tail (every row it will generate handed to some replica), the batch lingers before it returns and runs copies of
other replicas' stragglers on its engine; it returns when none is left to wait for. A batch asks from its start,
so copies run beside a replica's last batches, not only after them. Before the tail a batch returns at once (its
replica takes the next one from Ray Data).

- `StragglerCoordinator` (s2d.actors.straggler_coordinator): one small named asyncio actor per job (like the
  failure ledger). It hears each batch start and end (its key, holder and row count: the tail is every expected
  row started) and holds a batch's rows once it has run `generation.straggler_min_s`; a lingering batch asks it
  for stragglers (`s2d.engine.core.stragglers.pick_straggler`), runs copies at the lowest priority, and posts
  their tables.
- `StragglerWatch`: a replica's side. Its holder path runs the batch as before and, if a posted copy arrives first,
  aborts its own requests (`AbortScope`) and returns the copy; at the tail it lingers as above, and its watch
  thread aborts a copy whose holder finished first. A helper that dies loses nothing: the holder still runs its own.

Cheap when nothing is slow: two fire-and-forget messages per batch (its start, for the tail, and its end, for the
pool's median) and two asks (from a thread at its start, and before it returns), which the coordinator answers at
once before the tail; only batches older than `straggler_min_s` send their rows, and only at the tail is an ask
ever answered with copies or held.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s2d.actors.failures import describe_failure
from s2d.engine.core.program import Completion, SamplingRequest, all_of
from s2d.engine.core.stragglers import MAX_ASK_AGAIN_S

T = TypeVar("T")
WATCH_INTERVAL_S = 0.2  # how often a replica checks its registered batches and copies (latency of a posted copy)
COPY_PRIORITY = 1 << 30  # a copy runs after every batch of the replica's own (their priorities are arrival tickets)
CLAIM_TIMEOUT_S = MAX_ASK_AGAIN_S + 10.0  # a claim waits in the coordinator up to MAX_ASK_AGAIN_S
_current = threading.local()  # the AbortScope of the batch this thread runs


class BatchAborted(RuntimeError):
    """A batch's engine calls were aborted: another replica's copy of it, or its holder, finished first."""


def batch_key(rows: Sequence[dict[str, Any]]) -> str:
    """A batch's identity across replicas and retries: its inputs' ids."""
    return hashlib.sha256("\n".join(sorted(str(row["input_id"]) for row in rows)).encode()).hexdigest()[:24]


class AbortScope:
    """Every engine call one batch makes (through `AbortableBackend`, from the thread inside `entered()`), abortable
    at once from another thread: its tasks on the engine's loop are cancelled, and vLLM aborts a cancelled request."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tasks: set[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = set()
        self.aborted = False

    def abort(self) -> None:
        with self._lock:
            self.aborted, tasks = True, list(self._tasks)
        for loop, task in tasks:
            loop.call_soon_threadsafe(task.cancel)

    async def tracked(self, coroutine: Coroutine[Any, Any, T]) -> T:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        with self._lock:
            if self.aborted:
                coroutine.close()
                raise BatchAborted("the batch was aborted")
            self._tasks.add((loop, task))
        try:
            return await coroutine
        finally:
            with self._lock:
                self._tasks.discard((loop, task))

    @contextlib.contextmanager
    def entered(self):
        _current.scope = self
        try:
            yield self
        finally:
            _current.scope = None


class AbortableBackend:
    """The replica's engine through `s2d.engine.core.program`'s protocols (`run`, `complete`, `generate`), with
    every call of a batch in its thread's `AbortScope`."""

    def __init__(self, generator: Any):
        self._generator = generator

    async def complete(self, prompt: str, request: SamplingRequest, adapter: str | None = None) -> list[Completion]:
        return await self._generator.complete(prompt, request, adapter)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        scope = getattr(_current, "scope", None)
        if scope is None:
            return self._generator.run(coroutine)
        if scope.aborted:
            coroutine.close()
            raise BatchAborted("the batch was aborted")
        return self._generator.run(scope.tracked(coroutine))

    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        return self.run(all_of(self.complete(prompt, request, adapter) for prompt in prompts))


@dataclass
class _Batch:
    """One batch this replica holds, as its watch sees it."""

    key: str
    rows: list[dict[str, Any]]
    started: float
    scope: AbortScope = field(default_factory=AbortScope)
    outcome: Any = None  # the registration's ObjectRef while it may still bring a helper's table
    registered: bool = False
    posted: Any = None  # a helper's table that came first
    done: bool = False


class StragglerWatch:
    """A replica's side of re-issuing stragglers: its batches' path (`run_batch`: a copy that came first is returned
    instead, and at the job's tail the batch lingers to copy other replicas' stragglers), and one thread that
    registers this replica's long batches, hands them a copy that came first, and aborts a copy whose holder
    finished first.

    `run_copy(rows)` runs a copy on this replica's engine (at COPY_PRIORITY) and returns its table."""

    def __init__(
        self, coordinator: str, min_s: float, run_copy: Callable[[list[dict[str, Any]]], Any], stopped: threading.Event
    ):
        self.coordinator_name, self.min_s = coordinator, min_s
        self._run_copy, self._stopped = run_copy, stopped
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}
        self._copies: dict[str, tuple[AbortScope, Any]] = {}  # key -> (the copy's scope, its `released` ref)
        self._handle: Any = None
        self._last_error: str | None = None
        self._me: str | None = None
        threading.Thread(target=self._watch, name="s2d-straggler-watch", daemon=True).start()

    # --- the batches' side (the replica's __call__ threads)

    def run_batch(self, rows: list[dict[str, Any]], own: Callable[[], T]) -> T:
        """`own()` (the batch on this engine), unless a helper's copy comes back first: then own's requests are
        aborted and the copy is returned. Either way the coordinator hears once that the batch is done; then, at
        the job's tail, the batch lingers (`_linger`) before it returns."""
        batch = _Batch(batch_key(rows), rows, time.monotonic())
        self._tell("started", batch.key, self._who(), len(rows))
        with self._lock:
            self._batches[id(batch)] = batch
        # At the job's tail, copies of other replicas' stragglers start beside this batch, not after it: its engine
        # has room for them (they run at the lowest priority), and the tail is shorter by up to a batch's time.
        helping = threading.Thread(target=self._linger, name="s2d-straggler-help", daemon=True)
        helping.start()
        try:
            with batch.scope.entered():
                table = own()
        except Exception:
            if self._finish(batch) is None:
                raise
        else:
            self._finish(batch)
        if batch.posted is not None:  # a copy came first: own's result (if any) is dropped
            table = batch.posted
        self._tell("finished", batch.key, time.monotonic() - batch.started, batch.posted is not None)
        helping.join()
        self._linger()  # stragglers that appeared since
        return table

    def _finish(self, batch: _Batch) -> Any:
        with self._lock:
            batch.done = True
            del self._batches[id(batch)]
            return batch.posted

    def _linger(self) -> None:
        """At the job's tail, copies of other replicas' stragglers (those the coordinator hands out at once run side
        by side), until the coordinator has none left to wait for; before the tail, nothing (one round trip). Kept
        in flight, this batch keeps its replica in Ray Data's pool, which releases a replica with none once every
        input is handed out."""
        import ray

        while not self._stopped.is_set():
            try:
                answer = ray.get(self._coordinator().claim.remote(self._who()), timeout=CLAIM_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - the coordinator gone (the job ending): return as it is
                self._lost(error)
                return
            if answer is None:
                return
            if isinstance(answer, (int, float)):  # the coordinator waited for a change: ask again
                continue
            copies = [threading.Thread(target=self._copy, args=copy, name="s2d-straggler-copy") for copy in answer]
            for thread in copies:
                thread.start()
            for thread in copies:
                thread.join()

    def _copy(self, key: str, rows: list[dict[str, Any]]) -> None:
        """Run a copy of another replica's batch here; post its table unless the holder finished first."""
        scope, started = AbortScope(), time.monotonic()
        with self._lock:
            self._copies[key] = (scope, self._coordinator().released.remote(key))
        try:
            with scope.entered():
                table = self._run_copy(rows)
        except Exception as error:  # noqa: BLE001 - a failed copy loses nothing: its holder still runs the batch
            if not scope.aborted:
                print(f"s2d: a re-issued batch failed here ({describe_failure(error)}); its holder still runs it")
                self._tell("abandon", key, self._who())
            return
        finally:
            with self._lock:
                self._copies.pop(key, None)
        if not scope.aborted:
            self._tell("post", key, self._who(), table, time.monotonic() - started)

    # --- the watch thread

    def _watch(self) -> None:
        while not self._stopped.is_set():
            try:
                if not self._register_and_collect():
                    self._stopped.wait(WATCH_INTERVAL_S)
            except Exception as error:  # noqa: BLE001 - the coordinator gone (the job ending): holders run their own
                self._lost(error)
                self._stopped.wait(WATCH_INTERVAL_S)

    def _lost(self, error: Exception) -> None:
        self._handle = None
        if self._last_error is None:  # once: the job ending makes every replica's watch fail this way
            self._last_error = describe_failure(error)
            print(f"s2d: straggler watch: {self._last_error}; this replica's batches run on its own", flush=True)

    def _register_and_collect(self) -> bool:
        """One round of the watch; False when it had nothing to wait on (the caller sleeps instead), True when it
        waited up to WATCH_INTERVAL_S on the coordinator's answers, returning as soon as one came."""
        import ray

        now = time.monotonic()
        with self._lock:
            batches = list(self._batches.values())
        for batch in batches:
            if not batch.registered and now - batch.started >= self.min_s:
                batch.registered = True
                batch.outcome = self._coordinator().hold.remote(batch.key, self._who(), batch.rows, now - batch.started)
        waiting = [batch for batch in batches if batch.outcome is not None]
        with self._lock:
            copies = list(self._copies.values())
        refs = [batch.outcome for batch in waiting] + [ref for _, ref in copies]
        if not refs:
            return False
        # A copy's table handed to a holder here, or a holder's end that makes a copy here moot: acted on at once.
        ready, _ = ray.wait(refs, num_returns=1, timeout=WATCH_INTERVAL_S)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if ready else (ready, None)
        for batch in (b for b in waiting if b.outcome in ready):
            self._collect(batch)
        for scope, ref in copies:
            if ref in ready:  # its holder returned the batch first: this copy is not needed
                scope.abort()
        return True

    def _collect(self, batch: _Batch) -> None:
        import ray

        try:
            table = ray.get(batch.outcome)
        except Exception:  # noqa: BLE001 - the coordinator gone: keep running our own
            table = None
        batch.outcome = None
        with self._lock:
            if table is None or batch.done:
                return
            batch.posted = table
        batch.scope.abort()

    # --- the coordinator

    def _coordinator(self) -> Any:
        if self._handle is None:
            import ray

            self._handle = ray.get_actor(self.coordinator_name)
        return self._handle

    def _who(self) -> str:
        if self._me is None:
            import ray

            self._me = f"{ray.get_runtime_context().get_actor_id()}:{os.getpid()}"
        return self._me

    def _tell(self, method: str, *args: Any) -> None:
        """A fire-and-forget call: no answer is waited for (the job ending loses nothing but a count)."""
        try:
            getattr(self._coordinator(), method).remote(*args)
        except Exception:  # noqa: BLE001 - the coordinator gone
            self._handle = None


def watch_replica(replica: Any, coordinator: str, min_s: float) -> StragglerWatch:
    """The watch of a `s2d.actors.replica.GenerationReplica`: `coordinator` is the job's coordinator actor, `min_s`
    generation.straggler_min_s. The replica is held by weak reference: the watch's thread must not keep it alive,
    or its __del__ never closes the engine."""
    this = weakref.ref(replica)

    def run_copy(rows: list[dict[str, Any]]) -> Any:
        alive = this()
        if alive is None:
            raise BatchAborted("the replica is gone")
        with alive.generator.priority(COPY_PRIORITY), alive.generator.deadline(alive.batch_timeout_s):
            return alive.generate_checked(rows)

    return StragglerWatch(coordinator, min_s, run_copy, replica._closed)
