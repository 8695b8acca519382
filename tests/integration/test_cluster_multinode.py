"""A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head and two worker nodes, each
worker advertising one `s2d_replica` slot. A tiny generate job whose replicas each ask for a slot must put its two
vLLM replicas on the two different worker nodes, and still account for every input exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from s2d.engine.cli import main
from s2d.engine.core.tasks import get_task

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
SLOT = "s2d_replica"
TINY = [
    "task.name=last_letter",
    "task.num_inputs=4",
    "sampling.n=2",
    "sampling.max_tokens=16",
    "method.name=system1",
    "output.inputs_per_shard=2",
    "generation.replicas=2",
    "generation.batch_size=2",
    "generation.cpus_per_replica=0.5",
    f"generation.resources={{{SLOT}: 1}}",
    "engine.gpu_memory_utilization=0.1",
]


@pytest.fixture(scope="module")
def three_nodes(packaged_model_dir):
    # The model is converted before the nodes start: two replicas converting it at once would take turns
    # (a file lock), and the first could finish this tiny job before the second is up.
    import ray
    from ray.cluster_utils import Cluster

    from s2d.cluster.connect import WORKER_ENV_VARS, connect

    session_ray = ray.is_initialized()  # the session's embedded Ray (ray_session): restarted after this module
    if session_ray:
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"head": 1},
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "object_store_memory": 200 * 2**20,
        },
    )
    # 2 CPUs per worker node: a curation task (1 CPU) scheduled there must not keep the node's replica waiting.
    workers = [cluster.add_node(num_cpus=2, resources={SLOT: 1}, object_store_memory=200 * 2**20) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": dict(WORKER_ENV_VARS)})
    try:
        yield cluster, {node.node_id for node in workers}
    finally:
        ray.shutdown()
        cluster.shutdown()
        if session_ray:  # tests after this module expect ray_session's Ray to be up, as they left it
            connect(address=None)


def test_replicas_land_on_different_nodes_and_every_input_is_accounted_for(three_nodes, tmp_path):
    _, worker_ids = three_nodes
    out = tmp_path / "run"
    with _ReplicaPlacements() as placements:
        assert main(["generate", str(DEMO), *TINY, f"out={out}", "--no-progress"]) == 0

    # One replica on each worker node, none on the head (it has no slot). Read while the job runs: the other
    # replica can finish this tiny job alone, and one torn down before its engine was up shows no node once dead.
    assert set(placements.nodes.values()) == worker_ids, placements.nodes

    inputs = {item.input_id for item in get_task("last_letter").generate(4, 0, "train")}
    accepted = pq.read_table(out / "shards").column("input_id").to_pylist()
    rejected = pq.read_table(out / "rejected").column("input_id").to_pylist()
    assert sorted(accepted + rejected) == sorted(inputs) and not set(accepted) & set(rejected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"] == 4 and metrics["samples"] == 8
    assert metrics["accepted"] + metrics["rejected"] == 4 and metrics["tokens"] > 0

    # The same figures as Ray metrics, served in Prometheus format by the metrics agent of the driver's node.
    cluster, _ = three_nodes
    ports = [node.metrics_export_port for node in [cluster.head_node, *cluster.worker_nodes]]
    assert _scraped(ports, "ray_s2d_inputs", str(out), want=4.0) == 4.0


class _ReplicaPlacements:
    """The node of every replica actor Ray places, polled from the state API in a thread while a job runs."""

    def __init__(self, every: float = 0.5):
        self.nodes: dict[str, str] = {}  # actor id -> node id
        self._every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _ReplicaPlacements:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # the last word: replicas alive at the end still show their node

    def _poll(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._read()
            except Exception:  # a state API call timing out on a loaded machine: the next poll reads again
                continue

    def _read(self) -> None:
        from ray.util.state import list_actors, list_workers

        for actor in list_actors(detail=True, limit=1000, raise_on_missing_output=False):
            if "GenerationReplica" not in (actor.get("class_name") or "") or actor["actor_id"] in self.nodes:
                continue
            node = actor.get("node_id")
            if not node and actor.get("pid"):  # still in its constructor: only its worker process knows the node
                workers = list_workers(filters=[("pid", "=", actor["pid"])], detail=True, raise_on_missing_output=False)
                node = next((worker["node_id"] for worker in workers if worker.get("node_id")), None)
            if node:
                self.nodes[actor["actor_id"]] = node


def _scraped(ports: list[int], name: str, job: str, want: float, timeout: float = 30.0) -> float | None:
    """A gauge's value for one job, polled until it reads `want` (Ray's metrics agents export periodically)."""
    value = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in "\n".join(map(_metrics_page, ports)).splitlines():
            if line.startswith(name + "{") and f'job="{job}"' in line:
                value = float(line.rsplit(" ", 1)[1])
        if value == want:
            break
        time.sleep(2)
    return value


def _metrics_page(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:  # an agent still starting, or a node that exports nothing
        return ""
