"""A generation replica: one vLLM engine in one Ray actor, running a method's prompt program.

The class is hosted two ways: as the callable class of a Ray Data `map_batches` actor pool
(data-parallel replicas fed by the streaming pipeline) and as a plain `ray.remote` actor (eval).
"""

from __future__ import annotations

import atexit
import gc
import itertools
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from s2d.actors.engine_watchdog import dead_engine_process, watch_engine_processes
from s2d.actors.failures import ReplicaFailed, describe_failure
from s2d.actors.occupancy import OccupancyRecorder, start_sampling
from s2d.actors.stragglers import AbortableBackend, batch_key, watch_replica
from s2d.actors.vllm_backend import BatchTimedOut
from s2d.cluster import compat_ray
from s2d.engine.core.methods import resolve_method
from s2d.engine.core.program import Chain, SamplingRequest, StepBarrier, run_method
from s2d.engine.core.spec import EngineSpec, JobSpec, SamplingSpec
from s2d.engine.core.tasks import get_task
from s2d.engine.data.generated import GENERATED_SCHEMA, generate_for_curation, with_input_errors
from s2d.engine.data.models import resolve_model

# For the replica actors of a job. Ray kills an actor's child processes as soon as its graceful exit begins,
# before any Python code of the exiting actor runs; vLLM's engine process is such a child, and vLLM's output
# handler then logs its death as an EngineDeadError traceback at the end of every successful job. Left alive,
# the engine is closed by the replica's __del__ (Ray Data drops the replica when it releases the pool), and
# vLLM's own exit handlers stop its processes if anything is left. A replica that dies without running Python
# (kill -9, its node's raylet gone) has its engine killed by its guard (s2d.actors.engine_guard).
RUNTIME_ENV = {"env_vars": compat_ray.replica_env_vars()}  # RAY_kill_child_processes_on_worker_exit=0


def _kill_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def sampling_request(sampling: SamplingSpec) -> SamplingRequest:
    return SamplingRequest(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens
    )


class GenerationReplica:
    def __init__(
        self,
        model: str,
        engine: dict[str, Any],
        seed: int,
        method: str | dict[str, Any] | None = None,
        request: SamplingRequest | None = None,
        max_lora_rank: int | None = None,
        replicas: int = 1,
        task: str | None = None,
        curate: dict[str, Any] | None = None,
        failure_ledger: str | None = None,
        max_engine_failures: int = 3,
        keep_samples: bool = False,
        step_barrier: bool = False,
        batch_timeout_s: float | None = None,
        max_restarts: int = 4,
        batch_priority: bool = True,
        stragglers: dict[str, Any] | None = None,
    ):
        started = time.perf_counter()
        import psutil
        import torch

        from s2d.actors import engine_forkserver
        from s2d.actors.engine_guard import start_guard
        from s2d.actors.vllm_backend import VLLMGenerator, cpu_engine_env, import_vllm
        from s2d.cluster.resources import cpu_thread_env

        self.failure_ledger = failure_ledger
        self.max_engine_failures = max_engine_failures
        # Enforced with a ledger only (a job's pool): eval's plain actor has no one to retry its calls elsewhere.
        self.batch_timeout_s = batch_timeout_s if failure_ledger is not None else None
        self.timeout_restarts = max_restarts // 2
        # Batches run in concurrent threads (the engine interleaves them); one engine failure is counted once.
        self._failure_lock = threading.Lock()
        self._closed = threading.Event()  # set by close(): the engine is shut down on purpose
        self._engine_processes: list = []  # vLLM's engine core and its workers, once the engine started
        self._refuse_after_too_many_failures()
        server = None
        if not torch.cuda.is_available():
            # Before the engine starts: its core process inherits this environment.
            os.environ.update(cpu_thread_env(replicas, os.cpu_count() or 1))
            os.environ.update(cpu_engine_env(EngineSpec(**engine)))
            # The engine core's imports, beside this process's own (actors/engine_forkserver.py).
            server = engine_forkserver.start_server() if engine_forkserver.wanted() else None
        # Resolved here, on the replica's node: a packaged model is converted into that node's cache.
        imported = time.perf_counter()
        self.model_path = resolve_model(model)
        resolved = time.perf_counter()
        import_vllm()
        if server is not None and not server.serve_vllm():
            server = None  # this vLLM starts its engine core itself (compat_vllm logged why)
        vllm_imported = time.perf_counter()
        # Not the engine's: the fork server and its resource tracker.
        not_engine = {child.pid for child in psutil.Process().children(recursive=True)}
        self.generator = VLLMGenerator.load(self.model_path, EngineSpec(**engine), seed, max_lora_rank)
        self._engine_processes = engine_processes = [
            child for child in psutil.Process().children(recursive=True) if child.pid not in not_engine
        ]
        start_guard(engine_processes)  # the engine's processes die with this one, however it ends
        if server is not None and (mismatch := server.preload_mismatch()):
            print(mismatch, flush=True)
        # Where this replica's start-up went (bench/replica_start.py).
        self.startup_s = {
            "imports": imported - started,
            "resolve_model": resolved - imported,
            "import_vllm": vllm_imported - resolved,
            "engine_start": time.perf_counter() - vllm_imported,
        }
        # What methods run on: chains flow through the async engine, or (step_barrier, for benchmarks) each step
        # runs over the whole batch as before; with stragglers re-issued, every call of a batch can be aborted.
        calls = self.generator if stragglers is None else AbortableBackend(self.generator)
        self.backend = StepBarrier(calls) if step_barrier else calls
        # Oldest batch first (continuous admission); False (benchmarks): every batch equal, i.e. vLLM's first come
        # first served across the batches, as before.
        self.batch_priority = batch_priority
        if failure_ledger is not None:
            # A weak reference: the watchdog must not keep the replica alive, or its __del__ never closes the engine.
            engine_failed = weakref.WeakMethod(self._engine_failed)
            watch_engine_processes(
                engine_processes, lambda error: (method := engine_failed()) and method(error), self._closed
            )
        # Any other exit that runs Python's exit handlers (Ray stopping workers when the driver ends): registered
        # after vLLM's own, so it runs first, while the engine's loop still runs. Weakly, like the watchdog.
        close = weakref.WeakMethod(self.close)
        atexit.register(lambda: (method := close()) and method())
        self._start_occupancy()
        self.method = resolve_method(method) if method else None
        self.request = request
        self.task = get_task(task) if task else None
        self.curate = curate or {"rule": "majority"}
        self.seed = seed
        self.keep_samples = keep_samples  # also return each sample's chain (s2d.engine.data.samples)
        # Last: its thread uses the engine at once. {coordinator, min_s}: the job's straggler coordinator
        # (s2d.actors.stragglers) and generation.straggler_min_s.
        self.stragglers = None if stragglers is None else watch_replica(self, **stragglers)

    def _start_occupancy(self) -> None:
        """Sample how full the engine is (s2d.actors.occupancy) and report it to the job's ledger. Batches take
        arrival tickets: the scheduling priority of their requests (VLLMGenerator.priority), oldest first."""
        self._tickets = itertools.count()
        self._batches_held = 0  # batches this replica runs now (Ray Data's concurrent calls)
        self._held_lock = threading.Lock()
        self.occupancy = OccupancyRecorder(self.generator.max_num_seqs)
        this = weakref.ref(self)  # the sampler must not keep the replica alive (see the watchdog)

        def sequences() -> int:
            replica = this()
            return 0 if replica is None else replica.generator.unfinished_sequences()

        def batches() -> int:
            replica = this()
            return 0 if replica is None else replica._batches_held

        def report() -> None:
            replica = this()
            if replica is not None:
                replica.report_occupancy()

        start_sampling(
            self.occupancy, sequences, batches, self._closed, on_tick=report if self.failure_ledger else None
        )

    def report_occupancy(self) -> None:
        """Send the occupancy sums to the job's ledger (fire and forget: the ledger's answer is not needed)."""
        if self.failure_ledger is None:
            return
        import ray

        try:
            ray.get_actor(self.failure_ledger).report_occupancy.remote(
                ray.get_runtime_context().get_actor_id(), str(os.getpid()), self.occupancy.summary()
            )
        except Exception:  # noqa: BLE001 - the ledger gone (the job ending): a lost report costs nothing
            pass

    @classmethod
    def for_job(cls, spec: JobSpec, max_lora_rank: int | None = None) -> dict[str, Any]:
        """Constructor kwargs for a job's generation replica (plain data, so Ray can ship it)."""
        return dict(
            model=spec.model,
            engine=spec.engine.model_dump(),
            seed=spec.sampling.seed,
            method=spec.method.model_dump(),
            request=sampling_request(spec.sampling),
            max_lora_rank=max_lora_rank,
            replicas=spec.generation.replicas,
            task=spec.task.name,
            curate=spec.curate.model_dump(),
            keep_samples=spec.output.keep_samples,
            batch_timeout_s=spec.generation.batch_timeout_s,
            max_restarts=spec.generation.max_restarts,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Ray Data stage: one row per input in; out, the replica -> curation contract
        (s2d.engine.data.generated.GENERATED_SCHEMA): the input's samples (texts, tokens, chains when kept) and
        what the job's consistency criterion needs (its variants' inverses, or the judge's choice)."""
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        with self._held_lock:
            ticket, ahead = next(self._tickets), self._batches_held
            self._batches_held += 1
        try:
            with self.generator.priority(ticket if self.batch_priority else 0):  # the oldest batch's run first
                if self.stragglers is None:
                    return self.generate_in_time(rows, queued_behind=ahead)
                # Or another replica's copy, if it comes back first (this batch's requests then aborted).
                return self.stragglers.run_batch(rows, lambda: self.generate_in_time(rows, queued_behind=ahead))
        except Exception as error:  # noqa: BLE001 - any engine failure: restart with a fresh engine, or stop the job
            self._engine_failed(error)
            raise
        finally:
            with self._held_lock:
                self._batches_held -= 1
            self.report_occupancy()

    def generate_checked(self, rows: list[dict[str, Any]]) -> pa.Table:
        """`generate_rows` for the rows that fit the engine's context; the others come back with `input_error`
        (and no samples) so that curation quarantines them instead of the engine failing the whole batch."""
        budget = self.generator.max_model_len - self.request.max_tokens
        lengths = self.generator.prompt_tokens([str(row["prompt"]) for row in rows])
        errors = [
            None
            if length <= budget
            else (
                f"too_long: the direct prompt has {length} tokens; with sampling.max_tokens="
                f"{self.request.max_tokens} it does not fit engine.max_model_len={self.generator.max_model_len}"
            )
            for length in lengths
        ]
        generated = self.generate_rows([row for row, error in zip(rows, errors) if error is None])
        return with_input_errors(generated, rows, errors)

    def generate_in_time(self, rows: list[dict[str, Any]], queued_behind: int = 0) -> pa.Table:
        """`generate_checked` within generation.batch_timeout_s (times `queued_behind`, the batches this replica
        held when this one arrived, when more than one: the engine runs the oldest batch first, so a batch behind
        k others takes up to k batch times; behind one, its time as before admission was ordered).

        A batch past it (its requests aborted) is retried once: on a fresh engine, by restarting this replica (a
        hang is most often a wedged engine; Ray retries the replica's batches on its restart), or, once it has
        restarted max_restarts // 2 times for timeouts (the rest is left for process deaths), here on the same
        engine. Past it again, wherever the retry ran (the job's ledger counts per batch), its inputs are
        quarantined and the job goes on."""
        if self.batch_timeout_s is None:
            return self.generate_checked(rows)
        import ray

        ledger = ray.get_actor(self.failure_ledger)
        batch = batch_key(rows)
        limit = self.batch_timeout_s * max(1, queued_behind)
        for _ in range(2):
            try:
                with self.generator.deadline(limit):
                    return self.generate_checked(rows)
            except BatchTimedOut:
                pass
            if ray.get(ledger.batch_timed_out.remote(batch)) > 1:
                break
            if ray.get(
                ledger.restart_for_timeout.remote(ray.get_runtime_context().get_actor_id(), self.timeout_restarts)
            ):
                self._restart(
                    f"a batch of {len(rows)} inputs ran past generation.batch_timeout_s={self.batch_timeout_s:g}"
                )
        print(f"s2d: a batch of {len(rows)} inputs timed out twice; quarantining it as batch_timeout", flush=True)
        reason = (
            f"batch_timeout: its batch of {len(rows)} inputs ran past generation.batch_timeout_s="
            f"{self.batch_timeout_s:g} twice (retried once); raise the limit if batches are this slow"
        )
        return with_input_errors(GENERATED_SCHEMA.empty_table(), rows, [reason] * len(rows))

    def _restart(self, cause: str) -> None:
        """Exit with the engine killed first: Ray restarts this actor and retries its in-flight batches there."""
        self._failure_lock.acquire()  # never released: one thread exits the process (as in _engine_failed)
        print(f"s2d: {cause}; restarting the replica, its batches are retried on a fresh engine", flush=True)
        _kill_children()  # a suspect engine is not worth a graceful shutdown, and must not outlive this process
        os._exit(1)

    def _engine_failed(self, error: Exception) -> None:
        """Count the failure job-wide and exit the process: Ray restarts this actor and retries its batches.
        The restarted replica refuses to start once the job's limit is reached, which fails the job with the
        cause. Without a ledger (eval's plain actor) return, and the caller re-raises the error itself."""
        if self.failure_ledger is None:
            return
        import ray

        self._failure_lock.acquire()  # never released: the first failing thread exits the process
        # A request that was running when an engine process died fails with vLLM's EngineDeadError ("see stack
        # trace above"), before the watchdog looks: the process's exit is the cause to name.
        cause = describe_failure(dead_engine_process(self._engine_processes) or error)
        failures = ray.get(ray.get_actor(self.failure_ledger).record.remote(cause))
        print(
            f"s2d: replica engine failed ({cause}); restarting it ({failures}/{self.max_engine_failures})", flush=True
        )
        _kill_children()  # a failed engine is not worth a graceful shutdown, and must not outlive this process
        os._exit(1)

    def _refuse_after_too_many_failures(self) -> None:
        if self.failure_ledger is None:
            return
        import ray

        causes = ray.get(ray.get_actor(self.failure_ledger).causes.remote())
        if len(causes) >= self.max_engine_failures:
            raise ReplicaFailed(
                f"the vLLM engine failed {len(causes)} time(s), the job's limit "
                f"(generation.max_engine_failures); last error: {causes[-1]}"
            )

    def generate_rows(
        self,
        rows: list[dict[str, Any]],
        method: str | dict[str, Any] | None = None,
        task: str | None = None,
        curate: dict[str, Any] | None = None,
        request: SamplingRequest | None = None,
    ) -> pa.Table:
        """`__call__` on plain rows; each argument left out is the job's (tests pass others to one engine)."""
        curate = curate or self.curate
        return generate_for_curation(
            self.backend,
            resolve_method(method) if method else self.method,
            get_task(task) if task else self.task,
            rows,
            request or self.request,
            rule=curate["rule"],
            perturbation=curate.get("perturbation"),
            variants=curate.get("variants", 2),
            seed=self.seed,
            keep_samples=self.keep_samples,
        )

    def run(
        self,
        method: str | dict[str, Any],
        contexts: Sequence[dict[str, Any]],
        request: SamplingRequest,
        adapter: str | None = None,
    ) -> list[list[Chain]]:
        """Direct use (eval): any method (a name, or a job's method section for custom), any sampling,
        optionally through a LoRA adapter."""
        return run_method(self.backend, resolve_method(method), contexts, request, adapter)

    def ready(self) -> str:
        return self.model_path

    def close(self) -> None:
        """Shut the engine down before this actor exits (see RUNTIME_ENV): stopped any other way, its process
        dies under vLLM's output handler, which logs an EngineDeadError traceback."""
        generator = getattr(self, "generator", None)  # None: __init__ failed before the engine started
        if generator is not None and not self._closed.is_set():
            self._closed.set()
            generator.unload(collect=False)
            # The process exits next, and Python's exit would scan the whole heap for garbage (torch, vLLM: seconds
            # of a core, which at a job's end the last curation and shard writes need): frozen, it is skipped, and
            # the exit frees the memory anyway.
            gc.freeze()

    def __del__(self):
        # Ray Data drops its replica when it releases the actor pool (gracefully); a plain actor (eval) can call
        # close() itself before it is released.
        self.close()

    def stats(self) -> dict[str, int]:
        return dict(self.generator.stats)

    def occupancy_figures(self) -> dict:
        """This replica's occupancy since it started (s2d.actors.occupancy.merge), for benchmarks and eval."""
        from s2d.actors.occupancy import merge

        return merge([self.occupancy.summary()])

    def __ray_shutdown__(self) -> None:  # a plain actor exiting gracefully (its handles gone)
        self.close()
