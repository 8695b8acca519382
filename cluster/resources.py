"""Resources each kind of worker asks Ray for, computed from the job spec: pure data that tests inspect."""

from __future__ import annotations

from typing import Any

from s2d.engine.core.spec import JobSpec, replica_bounds


def replica_resources(spec: JobSpec, cluster_gpus: float) -> dict[str, Any]:
    """Ray actor options of one standalone vLLM replica (eval); the generate pool uses `s2d.cluster.placement`.

    With GPUs, a replica holds tensor_parallel_size x pipeline_parallel_size GPUs unless the spec says
    otherwise; without, it holds CPUs only and vLLM's CPU build runs.
    """
    gpus = spec.generation.gpus_per_replica
    if gpus is None:
        workers = spec.engine.tensor_parallel_size * spec.engine.pipeline_parallel_size
        gpus = float(workers) if cluster_gpus > 0 else 0.0
    options: dict[str, Any] = {"num_cpus": spec.generation.cpus_per_replica, "num_gpus": gpus}
    if spec.generation.resources:
        options["resources"] = dict(spec.generation.resources)
    return options


def cpu_thread_env(replicas: int | str, node_cpus: int) -> dict[str, str]:
    """Environment for vLLM's CPU build, set inside a replica (so it sees its own node) before the engine starts.

    vLLM's CPU build binds its compute threads to cores and by default keeps one core for its
    front end; on a small node with one replica that idles half the machine (2 cores here: 65 -> 90
    tok/s when both cores compute). With several CPU replicas per node, or a pool that may grow to several,
    vLLM's own binding is kept.
    """
    if replica_bounds(replicas)[1] > 1 or node_cpus < 1:
        return {}
    return {
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{node_cpus - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "OMP_NUM_THREADS": str(node_cpus),
    }
