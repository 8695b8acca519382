"""The generate stage's replica pool: the Ray Data actor stage that hosts the job's vLLM replicas, how many batches
each one holds at once, and the job's straggler coordinator (slow batches re-run at the job's tail).

s2d.engine.stages.generate builds the pipeline around it; the replica itself is s2d.actors.replica, the coordinator
s2d.actors.straggler_coordinator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from s2d.cluster.placement import (
    ReplicaPlacement,
    batches_per_replica,
    expected_max_num_seqs,
    largest_node_gpus,
    map_batches_placement_args,
    replica_placement,
)
from s2d.engine.core.spec import JobSpec


def replica_class():
    """The replica actor class of the pool (tests swap in a subclass here)."""
    from s2d.actors.replica import GenerationReplica

    return GenerationReplica


@dataclass(frozen=True)
class ReplicaPool:
    """The job's replica pool as it is planned once per job: where each replica is placed (for the largest GPU
    node of the cluster) and how many batches each holds at once (batches_per_replica: enough to keep its engine at
    its sequence cap, for the cap its device most likely gives)."""

    placement: ReplicaPlacement
    in_flight: int


def plan_replica_pool(ray, spec: JobSpec) -> ReplicaPool:
    """The job's ReplicaPool on the cluster `ray` is connected to."""
    placement = replica_placement(spec, largest_node_gpus(ray.nodes()))
    in_flight = batches_per_replica(expected_max_num_seqs(placement), spec.generation.batch_size, spec.sampling.n)
    return ReplicaPool(placement, in_flight)


def cpus_left_by_pool(ray, spec: JobSpec, pool: ReplicaPool) -> float:
    """The cluster's CPUs the pool, at its largest, leaves to the job's tasks (planned, like the pool, for the
    cluster as it is when the job starts). Replicas keep their CPUs for the whole job."""
    pool_cpus = spec.generation.max_replicas * pool.placement.cpus
    return float(ray.cluster_resources().get("CPU", 0.0)) - pool_cpus


def leaves_cpus_for_partition(ray, spec: JobSpec, pool: ReplicaPool) -> bool:
    """Whether the job's inputs may be partitioned while its replicas start: only when the pool leaves at least one
    CPU to the partition's tasks; a pool that takes them all would starve them (on a GPU cluster the pool takes
    few; on a CPU-only machine one replica per core takes every one, and the partition runs first, as before)."""
    return cpus_left_by_pool(ray, spec, pool) >= 1.0


def tasks_beside_pool(ray, spec: JobSpec, pool: ReplicaPool) -> int:
    """How many of the job's tasks of one kind (curation, shard writes) run at once: one per CPU the pool leaves,
    at least one, never more. At the job's tail Ray Data releases the replicas, and their CPUs would let it run more
    curation tasks at once, on worker processes started for them then: on two cores two such starts (1-2 s of CPU
    each) slowed the tail's four 20 ms curation tasks to 0.23-0.47 s each (bench/RESULTS.md, 2026-12-06, seventh
    session)."""
    return max(1, int(cpus_left_by_pool(ray, spec, pool)))


def replica_stage(ray, spec: JobSpec, inputs, ledger_name: str, pool: ReplicaPool):
    """`inputs` (one block per replica batch) through the job's replica `pool`; failures are counted in the job's
    ledger actor `ledger_name`."""
    from s2d.actors.replica import RUNTIME_ENV

    GenerationReplica = replica_class()  # noqa: N806 - a class
    stragglers = None  # slow batches re-run at the job's tail by replicas done with theirs (s2d.actors.stragglers)
    if reissues_stragglers(spec):
        coordinator = straggler_coordinator_name(ledger_name)
        stragglers = {"coordinator": coordinator, "min_s": spec.generation.straggler_min_s}
    with warnings.catch_warnings():
        # Ray 2.60 deprecates ray_remote_args but names no parameter for actor restarts; it is the only way to
        # bound them (Ray Data's default restarts a crashing replica forever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return inputs.map_batches(
            GenerationReplica,
            fn_constructor_kwargs=GenerationReplica.for_job(spec)
            | {"failure_ledger": ledger_name, "max_engine_failures": spec.generation.max_engine_failures}
            | {"stragglers": stragglers},
            batch_size=spec.generation.batch_size,
            # A few batches per replica (pool.in_flight), running at once in threads: the replica's
            # async engine runs the oldest one's requests first and fills the rest of its sequence cap from the
            # others (continuous admission), so it stays full while a batch finishes its longest samples or moves
            # to its method's next step; a slow or restarting replica holds back only these and idle ones take
            # the rest.
            compute=ray.data.ActorPoolStrategy(
                min_size=spec.generation.min_replicas,
                max_size=spec.generation.max_replicas,
                max_tasks_in_flight_per_actor=pool.in_flight,
                max_concurrent_calls_per_actor=pool.in_flight,
                enable_true_multi_threading=True,
            ),
            # A replica process that dies is restarted and its batches retried, up to max_restarts per replica.
            max_restarts=spec.generation.max_restarts,
            max_task_retries=-1,
            runtime_env=RUNTIME_ENV,
            **map_batches_placement_args(pool.placement),
        )


def straggler_coordinator_name(ledger_name: str) -> str:
    """The job's straggler coordinator actor (s2d.actors.straggler_coordinator), named after its failure ledger."""
    return f"{ledger_name}-stragglers"


def reissues_stragglers(spec: JobSpec) -> bool:
    """Whether slow batches are re-run at the job's tail: unless straggler_factor is None, with 2+ replicas."""
    return spec.generation.straggler_factor is not None and spec.generation.max_replicas >= 2


def start_straggler_coordinator(ray, spec: JobSpec, ledger_name: str, in_flight: int):
    """The job's straggler coordinator, None when stragglers are not re-issued; `in_flight`: batches each replica
    holds. Its tail begins when all the rows this run sends to the replicas have started: it learns their number
    once the inputs are partitioned (`StragglerCoordinator.expect`)."""
    if not reissues_stragglers(spec):
        return None
    from s2d.actors.straggler_coordinator import StragglerCoordinator

    # An asyncio actor: every registered batch waits in it for its outcome, so its concurrency covers the pool's.
    waiting = 2 * spec.generation.max_replicas * in_flight + 64
    return (
        ray.remote(StragglerCoordinator)
        .options(name=straggler_coordinator_name(ledger_name), num_cpus=0, max_concurrency=waiting)
        .remote(spec.generation.straggler_factor, spec.generation.straggler_min_s, None)
    )


def read_reissues(ray, coordinator) -> dict[str, int]:
    """The coordinator's counts (none if it does not answer within a second: a figure, never worth failing for)."""
    if coordinator is None:
        return {}
    try:
        return ray.get(coordinator.counts.remote(), timeout=1.0)
    except Exception:  # noqa: BLE001 - any failure to read it leaves zeros
        return {}
