"""Which embedded Ray a job starts: the dashboard only for a job that trains (Ray Train polls the State API)."""

from __future__ import annotations

import sys
import types

import pytest

from s2d.cluster import connect as connect_module
from s2d.cluster.connect import connect, embedded_dashboard, embedded_init_kwargs, needs_dashboard


class FakeRay(types.ModuleType):
    """`ray` as connect uses it: init, shutdown, is_initialized, the node id of each start."""

    def __init__(self):
        super().__init__("ray")
        self.inits: list[dict] = []
        self.shutdowns = 0
        self._node: str | None = None

    def is_initialized(self) -> bool:
        return self._node is not None

    def init(self, **kwargs):
        self.inits.append(kwargs)
        self._node = f"node-{len(self.inits)}"

    def shutdown(self):
        self.shutdowns += 1
        self._node = None

    def get_runtime_context(self):
        return types.SimpleNamespace(get_node_id=lambda: self._node)


@pytest.fixture
def fake_ray(monkeypatch):
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(connect_module._without_dashboard, "node", None)
    return ray


def test_only_a_job_that_trains_needs_the_dashboard():
    assert needs_dashboard(["generate", "train", "eval"])  # s2d run: one Ray for all three stages
    assert needs_dashboard(["train"])
    assert not needs_dashboard(["generate"])
    assert not needs_dashboard(["eval"])
    assert not needs_dashboard(("generate", "eval"))


def test_embedded_kwargs_without_the_dashboard_bind_nothing():
    kwargs = embedded_init_kwargs(num_cpus=2, dashboard=False)
    assert kwargs["include_dashboard"] is False
    assert "dashboard_host" not in kwargs
    assert embedded_init_kwargs(num_cpus=2)["include_dashboard"] is True  # the default keeps it, on loopback


def test_a_generate_only_job_starts_ray_without_the_dashboard(fake_ray):
    with embedded_dashboard(needs_dashboard(["generate"])):
        connect()
    assert fake_ray.inits[-1]["include_dashboard"] is False


def test_a_plain_connect_and_a_training_job_start_it_with_the_dashboard(fake_ray):
    connect()
    assert fake_ray.inits[-1]["include_dashboard"] is True
    fake_ray.shutdown()
    with embedded_dashboard(needs_dashboard(["generate", "train", "eval"])):
        connect()
    assert fake_ray.inits[-1]["include_dashboard"] is True


def test_ray_train_never_runs_on_the_ray_a_generate_only_job_started_without_it(fake_ray):
    with embedded_dashboard(False):  # s2d.generate(...) in a notebook
        connect()
        connect()  # eval in the same job reuses it
    assert len(fake_ray.inits) == 1
    with embedded_dashboard(False):
        connect()  # another generate-only job reuses it too
    assert len(fake_ray.inits) == 1 and fake_ray.shutdowns == 0
    with embedded_dashboard(True):  # then s2d.train(...) in the same process: restarted with the dashboard
        connect()
    assert fake_ray.shutdowns == 1
    assert [kwargs["include_dashboard"] for kwargs in fake_ray.inits] == [False, True]
    connect()  # and kept from then on
    assert len(fake_ray.inits) == 2


def test_a_ray_s2d_did_not_start_is_never_restarted(fake_ray):
    fake_ray.init(num_cpus=1)  # the user's own ray.init, whatever its dashboard
    with embedded_dashboard(True):
        connect()
    assert fake_ray.shutdowns == 0 and len(fake_ray.inits) == 1


def test_an_existing_cluster_gets_no_dashboard_arguments(fake_ray):
    with embedded_dashboard(False):
        connect(address="ray://head:10001")
    assert "include_dashboard" not in fake_ray.inits[-1]
    assert connect_module._without_dashboard["node"] is None  # not an embedded Ray: never restarted
