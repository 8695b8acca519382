"""Where a replica's engine runs: Ray placement bundles for tensor/pipeline-parallel replicas, as pure data.

A replica with tensor_parallel_size x pipeline_parallel_size > 1 GPUs gets its own placement group with one
bundle per GPU, the layout vLLM's Ray executor expects: it starts one GPU worker per bundle that holds a GPU,
inside the placement group the replica actor was scheduled in (`placement_group_capture_child_tasks`). This is
what Ray Data LLM's `vLLMEngineStage` does. A one-GPU replica and any CPU replica need no placement group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from s2d.engine.core.spec import JobSpec


@dataclass(frozen=True)
class ReplicaPlacement:
    """What one replica asks Ray for.

    `bundles`/`strategy` describe its placement group (empty when it needs none); `actor_options` are the
    `map_batches` resource arguments of the replica actor itself.
    """

    bundles: list[dict[str, float]] = field(default_factory=list)
    strategy: str = ""
    actor_options: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_placement_group(self) -> bool:
        return bool(self.bundles)

    @property
    def cpus(self) -> float:
        """CPUs one replica holds for its life: its group's bundles (the actor's own come from the first), or the
        actor's."""
        if self.bundles:
            return sum(float(bundle.get("CPU", 0.0)) for bundle in self.bundles)
        return float(self.actor_options.get("num_cpus", 0.0))


def parallel_bundles(
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    gpus_per_node: int,
    cpus_per_worker: float = 1.0,
    resources: dict[str, float] | None = None,
) -> tuple[list[dict[str, float]], str]:
    """One bundle per GPU worker of a TP x PP replica, and the placement strategy.

    STRICT_PACK when the replica fits one node: tensor-parallel all-reduces run every layer and need NVLink.
    When pipeline stages must cross nodes (tp x pp > gpus_per_node), PACK: it still fills each node before the
    next, so every stage's TP group stays on one node when tp divides gpus_per_node, and only the thin
    stage-to-stage activations cross the network. SPREAD would scatter bundles one per node first and split
    TP groups across nodes; a TP group larger than a node is refused.
    Custom `resources` go into the first bundle, which the replica actor itself occupies.
    """
    if tensor_parallel_size < 1 or pipeline_parallel_size < 1:
        raise ValueError("tensor_parallel_size and pipeline_parallel_size must be at least 1")
    if gpus_per_node < 1:
        raise ValueError("a tensor/pipeline-parallel replica needs GPU nodes; the cluster reports none")
    if tensor_parallel_size > gpus_per_node:
        raise ValueError(
            f"tensor_parallel_size {tensor_parallel_size} exceeds the {gpus_per_node} GPUs of the largest node; "
            "tensor parallelism must stay within a node (use pipeline_parallel_size to span nodes)"
        )
    workers = tensor_parallel_size * pipeline_parallel_size
    bundles = [{"GPU": 1.0, "CPU": float(cpus_per_worker)} for _ in range(workers)]
    bundles[0].update(resources or {})
    strategy = "STRICT_PACK" if workers <= gpus_per_node else "PACK"
    return bundles, strategy


def replica_placement(spec: JobSpec, gpus_per_node: int) -> ReplicaPlacement:
    """Placement of one replica of this job on a cluster whose largest node has `gpus_per_node` GPUs (0: CPU only)."""
    engine, generation = spec.engine, spec.generation
    workers = engine.tensor_parallel_size * engine.pipeline_parallel_size
    custom = dict(generation.resources)
    if gpus_per_node > 0 and workers > 1 and generation.gpus_per_replica is None:
        bundles, strategy = parallel_bundles(
            engine.tensor_parallel_size,
            engine.pipeline_parallel_size,
            gpus_per_node,
            generation.cpus_per_replica,
            custom,
        )
        # The actor holds no GPU itself (vLLM's workers hold them) and takes its CPU from the first bundle.
        return ReplicaPlacement(bundles, strategy, {"num_cpus": generation.cpus_per_replica, "num_gpus": 0})
    gpus = generation.gpus_per_replica
    if gpus is None:
        gpus = float(workers) if gpus_per_node > 0 else 0.0
    options: dict[str, Any] = {"num_cpus": generation.cpus_per_replica, "num_gpus": gpus}
    if custom:
        options["resources"] = custom
    return ReplicaPlacement(actor_options=options)


def largest_node_gpus(nodes: list[dict[str, Any]]) -> int:
    """GPUs of the largest alive node, from `ray.nodes()`."""
    return max((int(node.get("Resources", {}).get("GPU", 0)) for node in nodes if node.get("Alive")), default=0)


def placement_group_strategy(bundles: list[dict[str, float]], strategy: str) -> dict[str, Any]:
    """Ray remote args of one replica actor: a fresh placement group, whose children (vLLM workers) it captures.

    Called by Ray Data once per actor it starts (`ray_remote_args_fn`), so each replica gets its own group.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = ray.util.placement_group(bundles, strategy=strategy)
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)}


def map_batches_placement_args(placement: ReplicaPlacement) -> dict[str, Any]:
    """The resource arguments of `Dataset.map_batches` for the replica pool."""
    args = dict(placement.actor_options)
    if placement.uses_placement_group:
        args["ray_remote_args_fn"] = partial(placement_group_strategy, placement.bundles, placement.strategy)
    return args


# vLLM's offline scheduler cap (max_num_seqs, the replica's `usage_context=LLM_CLASS`): 256 on CPU, 1024 on an
# H100/H200-class GPU (vLLM 0.32 EngineArgs.get_batch_defaults). Over-estimating it costs a few queued rows.
EXPECTED_MAX_NUM_SEQS = {"cpu": 256, "gpu": 1024}
# At most this many batches per replica: a slow or restarting replica holds back no more, and a batch queued behind
# the others waits at most this many batch times.
MAX_BATCHES_PER_REPLICA = 4


def batches_per_replica(max_num_seqs: int, batch_size: int, samples_per_input: int) -> int:
    """Batches one replica holds at once (Ray Data's calls in flight per actor) so that its engine stays at its
    sequence cap while work waits: the replica runs its oldest batch first (continuous admission, see
    VLLMGenerator's scheduling priority), and when that one returns, the others must still hold a cap's worth of
    sequences until Ray Data's next batch arrives. So: the batches that cover the cap, plus the one draining, at
    least 2. On CPU (256) with 64 inputs x n=8 that is 2; on a GPU (1024) 3; with 16 inputs x n=8 on CPU, 3.

    Batches too small for MAX_BATCHES_PER_REPLICA of them to cover the cap keep 2, as before: a few more tiny
    batches would not fill the engine either, and a slow replica would hold more of them back (the fault and
    slow-replica tests run one-input batches). Raise generation.batch_size to fill the engine there."""
    sequences_per_batch = max(batch_size * samples_per_input, 1)
    needed = max(2, -(-max_num_seqs // sequences_per_batch) + 1)
    return needed if needed <= MAX_BATCHES_PER_REPLICA else 2


def expected_max_num_seqs(placement: ReplicaPlacement) -> int:
    """The sequence cap a replica of this placement will most likely get (it is known only once its engine runs)."""
    gpus = placement.actor_options.get("num_gpus", 0) or any(bundle.get("GPU") for bundle in placement.bundles)
    return EXPECTED_MAX_NUM_SEQS["gpu" if gpus else "cpu"]
