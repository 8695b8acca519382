import pytest

from s2d.cluster.placement import (
    ReplicaPlacement,
    largest_node_gpus,
    map_batches_placement_args,
    parallel_bundles,
    replica_placement,
)
from s2d.engine.core.spec import SpecError, parse_spec, replica_bounds


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("pp", [1, 2])
def test_one_bundle_per_gpu_worker_packed_on_one_node_when_it_fits(tp, pp):
    bundles, strategy = parallel_bundles(tp, pp, gpus_per_node=8)
    assert bundles == [{"GPU": 1.0, "CPU": 1.0}] * (tp * pp)
    assert strategy == ("STRICT_PACK" if tp * pp <= 8 else "PACK")


def test_pipeline_stages_cross_nodes_with_pack_so_tp_groups_stay_whole():
    bundles, strategy = parallel_bundles(8, 2, gpus_per_node=8)
    assert len(bundles) == 16 and strategy == "PACK"
    assert parallel_bundles(4, 2, gpus_per_node=4)[1] == "PACK"
    assert parallel_bundles(2, 2, gpus_per_node=4)[1] == "STRICT_PACK"


def test_tensor_parallel_group_larger_than_a_node_or_no_gpus_is_refused():
    with pytest.raises(ValueError, match="within a node"):
        parallel_bundles(8, 1, gpus_per_node=4)
    with pytest.raises(ValueError, match="GPU nodes"):
        parallel_bundles(2, 1, gpus_per_node=0)


def test_custom_resources_and_cpus_go_into_the_bundles():
    bundles, _ = parallel_bundles(2, 1, gpus_per_node=8, cpus_per_worker=2, resources={"vllm_node": 1})
    assert bundles == [{"GPU": 1.0, "CPU": 2.0, "vllm_node": 1}, {"GPU": 1.0, "CPU": 2.0}]


def _spec(**generation_and_engine):
    engine = {k: v for k, v in generation_and_engine.items() if k.endswith("parallel_size")}
    generation = {k: v for k, v in generation_and_engine.items() if k not in engine}
    return parse_spec({"model": "m", "engine": engine, "generation": generation})


def test_tp_replica_on_gpus_gets_a_placement_group_and_holds_no_gpu_itself():
    placement = replica_placement(_spec(tensor_parallel_size=4, pipeline_parallel_size=2), gpus_per_node=8)
    assert placement.uses_placement_group and len(placement.bundles) == 8 and placement.strategy == "STRICT_PACK"
    assert placement.actor_options == {"num_cpus": 1.0, "num_gpus": 0}
    args = map_batches_placement_args(placement)
    assert args["num_gpus"] == 0 and args["ray_remote_args_fn"].args == (placement.bundles, "STRICT_PACK")


def test_single_gpu_and_cpu_replicas_need_no_placement_group():
    assert replica_placement(_spec(), gpus_per_node=8) == ReplicaPlacement(
        actor_options={"num_cpus": 1.0, "num_gpus": 1.0}
    )
    cpu = replica_placement(_spec(tensor_parallel_size=2, resources={"node_slot": 1}), gpus_per_node=0)
    assert cpu == ReplicaPlacement(actor_options={"num_cpus": 1.0, "num_gpus": 0.0, "resources": {"node_slot": 1}})
    assert "ray_remote_args_fn" not in map_batches_placement_args(cpu)
    # an explicit GPU share wins: half a GPU per replica, no placement group
    assert replica_placement(_spec(gpus_per_replica=0.5), gpus_per_node=8).actor_options["num_gpus"] == 0.5


def test_largest_node_counts_alive_nodes_only():
    nodes = [
        {"Alive": True, "Resources": {"GPU": 4.0}},
        {"Alive": False, "Resources": {"GPU": 8.0}},
        {"Alive": True, "Resources": {"CPU": 16.0}},
    ]
    assert largest_node_gpus(nodes) == 4
    assert largest_node_gpus([]) == 0


@pytest.mark.parametrize(
    "value, bounds", [(1, (1, 1)), (4, (4, 4)), ("2..8", (2, 8)), (" 3 .. 3 ", (3, 3)), ("5", (5, 5))]
)
def test_autoscaling_bounds(value, bounds):
    assert replica_bounds(value) == bounds
    generation = parse_spec({"model": "m", "generation": {"replicas": value}}).generation
    assert (generation.min_replicas, generation.max_replicas) == bounds


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "at least 1"),
        ("0..4", "at least 1"),
        ("8..2", "min <= max"),
        ("two", "min..max"),
        ("1..", "min..max"),
        (True, "number"),
    ],
)
def test_bad_autoscaling_bounds_are_refused_clearly(value, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"model": "m", "generation": {"replicas": value}})


def test_fixed_range_normalises_to_a_number():
    assert parse_spec({"model": "m", "generation": {"replicas": "2..2"}}).generation.replicas == 2


def test_batches_in_flight_cover_the_engine_cap_plus_the_one_draining():
    from s2d.cluster.placement import MAX_BATCHES_PER_REPLICA, batches_per_replica, expected_max_num_seqs

    assert batches_per_replica(256, 64, 8) == 2  # CPU, the default batch: one batch covers the cap
    assert batches_per_replica(1024, 64, 8) == 3  # an H100-class GPU
    assert batches_per_replica(256, 16, 8) == 3
    assert batches_per_replica(256, 22, 4) == MAX_BATCHES_PER_REPLICA  # 88 sequences a batch: 3 cover the cap
    assert batches_per_replica(256, 1, 2) == 2  # tiny batches cannot fill it: two, as before (not dozens)
    assert batches_per_replica(1024, 32, 8) == 2
    assert batches_per_replica(256, 4096, 1) == 2  # never fewer than two
    assert expected_max_num_seqs(ReplicaPlacement(actor_options={"num_cpus": 1, "num_gpus": 0})) == 256
    assert expected_max_num_seqs(ReplicaPlacement(actor_options={"num_cpus": 1, "num_gpus": 1.0})) == 1024
    assert expected_max_num_seqs(ReplicaPlacement([{"GPU": 1.0, "CPU": 1.0}] * 2, "PACK", {"num_gpus": 0})) == 1024


def test_a_replica_holds_its_actors_cpus_or_its_groups():
    assert ReplicaPlacement(actor_options={"num_cpus": 0.5, "num_gpus": 0}).cpus == 0.5
    bundles, strategy = parallel_bundles(2, 1, gpus_per_node=8, cpus_per_worker=2)
    assert ReplicaPlacement(bundles, strategy, {"num_cpus": 2, "num_gpus": 0}).cpus == 4.0


class _Cluster:
    """What leaves_cpus_for_partition and tasks_beside_pool ask Ray: its nodes (for GPUs) and its CPUs."""

    def __init__(self, cpus: float, gpus: int = 0):
        self.cpus, self.gpus = cpus, gpus

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": self.cpus, "GPU": self.gpus}}]

    def cluster_resources(self):
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


@pytest.mark.parametrize(
    ("cpus", "gpus", "overrides", "beside"),
    [
        (2, 0, [], True),  # one replica of one CPU on two cores: one left for the partition
        (2, 0, ["generation.replicas=2"], False),  # two replicas take both cores: the partition runs first
        (2, 0, ["generation.replicas=2", "generation.cpus_per_replica=0.5"], True),
        (16, 8, ["generation.replicas=8"], True),  # a GPU node: the pool takes 8 of its 16 CPUs
        (8, 8, ["generation.replicas=8"], False),
    ],
)
def test_inputs_are_partitioned_beside_the_replicas_start_only_when_the_pool_leaves_a_cpu(
    cpus, gpus, overrides, beside
):
    from s2d.engine.stages.replica_pool import leaves_cpus_for_partition, plan_replica_pool

    spec = parse_spec({"model": "smollm2-135m", "out": "unused"}, overrides)
    cluster = _Cluster(cpus, gpus)
    assert leaves_cpus_for_partition(cluster, spec, plan_replica_pool(cluster, spec)) is beside


@pytest.mark.parametrize(
    ("cpus", "gpus", "overrides", "tasks"),
    [
        (2, 0, [], 1),  # one replica of one CPU on two cores
        (2, 0, ["generation.replicas=2"], 1),  # the replicas take both cores: still one
        (2, 0, ["generation.replicas=2", "generation.cpus_per_replica=0.5"], 1),
        (16, 8, ["generation.replicas=8"], 8),  # a GPU node: the pool takes 8 of its 16 CPUs
    ],
)
def test_curation_and_shard_writes_run_one_per_cpu_the_pool_leaves(cpus, gpus, overrides, tasks):
    from s2d.engine.stages.replica_pool import plan_replica_pool, tasks_beside_pool

    spec = parse_spec({"model": "smollm2-135m", "out": "unused"}, overrides)
    cluster = _Cluster(cpus, gpus)
    assert tasks_beside_pool(cluster, spec, plan_replica_pool(cluster, spec)) == tasks


@pytest.mark.parametrize(
    ("overrides", "reissues"),
    [
        ([], False),  # one replica: nothing to copy onto
        (["generation.replicas=2"], True),  # on by default (issue 26)
        (["generation.replicas=1..4"], True),  # a pool that may grow to several
        (["generation.replicas=2", "generation.straggler_factor=null"], False),
    ],
)
def test_stragglers_are_re_issued_by_default_in_a_pool_of_two_or_more(overrides, reissues):
    from s2d.engine.stages.replica_pool import reissues_stragglers

    assert reissues_stragglers(parse_spec({"model": "smollm2-135m", "out": "unused"}, overrides)) is reissues
