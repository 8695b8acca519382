from s2d.cluster.connect import embedded_init_kwargs
from s2d.cluster.resources import cpu_thread_env, replica_resources
from s2d.engine.core.spec import parse_spec


def test_replica_holds_tp_gpus_on_a_gpu_cluster_and_none_on_cpu():
    spec = parse_spec({"model": "m", "engine": {"tensor_parallel_size": 4}, "generation": {"cpus_per_replica": 2}})
    assert replica_resources(spec, cluster_gpus=8) == {"num_cpus": 2, "num_gpus": 4.0}
    assert replica_resources(spec, cluster_gpus=0) == {"num_cpus": 2, "num_gpus": 0.0}
    pinned = parse_spec({"model": "m", "generation": {"gpus_per_replica": 0.5}})
    assert replica_resources(pinned, cluster_gpus=8)["num_gpus"] == 0.5


def test_single_cpu_replica_computes_on_every_core():
    assert cpu_thread_env(replicas=1, node_cpus=2) == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "OMP_NUM_THREADS": "2",
    }
    assert cpu_thread_env(replicas=3, node_cpus=16) == {}  # several replicas per node: vLLM's own binding


def test_embedded_ray_dashboard_is_bound_to_loopback():
    kwargs = embedded_init_kwargs(num_cpus=2)
    assert kwargs["num_cpus"] == 2
    assert kwargs["dashboard_host"] == "127.0.0.1"


def test_standalone_replica_holds_tp_x_pp_gpus_and_its_custom_resources():
    spec = parse_spec(
        {
            "model": "m",
            "engine": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
            "generation": {"resources": {"vllm_node": 1}},
        }
    )
    assert replica_resources(spec, cluster_gpus=8) == {"num_cpus": 1.0, "num_gpus": 4.0, "resources": {"vllm_node": 1}}


def test_a_pool_that_may_grow_keeps_vllms_own_thread_binding():
    assert cpu_thread_env(replicas="1..3", node_cpus=2) == {}
    assert cpu_thread_env(replicas="1..1", node_cpus=2)["OMP_NUM_THREADS"] == "2"


def test_cpu_engines_use_kv_blocks_small_enough_to_share_a_prompt():
    import torch

    from s2d.actors.vllm_backend import resolve_block_size

    assert parse_spec({"model": "m"}).engine.block_size is None
    assert resolve_block_size(None) == (None if torch.cuda.is_available() else 32)
    assert resolve_block_size(64) == 64  # an explicit engine.block_size is passed through
