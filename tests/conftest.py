"""Shared fixtures: one real local Ray per test session, the packaged model converted once."""

from __future__ import annotations

import os

import pytest

# Keep model conversions of test runs out of the user's cache, but share them across the session.
os.environ.setdefault("S2D_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "s2d"))


@pytest.fixture(scope="session")
def ray_session():
    """A real embedded Ray, started once: each start costs seconds, and vLLM replicas reuse it."""
    from s2d.cluster.connect import connect

    ray = connect(address=None)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def packaged_model_dir() -> str:
    from s2d.engine.data.models import resolve_model

    return resolve_model("smollm2-135m")
