"""Connect the driver to Ray: the embedded local cluster by default, an existing one by address."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import threading
from collections.abc import Iterable
from typing import Any

from s2d.cluster import compat_ray

# vLLM's Ray metrics import `ray.serve`; s2d reports its own metrics, so keep vLLM's off (FACTS.md).
WORKER_ENV_VARS = {"VLLM_USE_RAY_METRICS": "0", "TOKENIZERS_PARALLELISM": "false"}


# Whether an embedded Ray started in this context serves the dashboard: run_job sets it from the job's stages.
_DASHBOARD: contextvars.ContextVar[bool] = contextvars.ContextVar("s2d_embedded_dashboard", default=True)
# The node id of the embedded Ray this process started without the dashboard, while it is up: a later stage that
# needs the dashboard (Ray Train) restarts it. None: s2d started none, or it started one with the dashboard.
_without_dashboard: dict[str, str | None] = {"node": None}

log = logging.getLogger(__name__)


def needs_dashboard(stages: Iterable[str]) -> bool:
    """Whether a job of these stages needs the embedded Ray's dashboard: only Ray Train (its controller polls the
    State API, which the dashboard serves). Generate and eval start Ray ~2 s faster without it (bench/RESULTS.md)."""
    return "train" in set(stages)


@contextlib.contextmanager
def embedded_dashboard(on: bool):
    """An embedded Ray started by `connect` inside this block serves the dashboard only if `on` (run_job: a job's
    stages decide, `needs_dashboard`). Has no effect on a Ray already running or on an existing cluster."""
    token = _DASHBOARD.set(on)
    try:
        yield
    finally:
        _DASHBOARD.reset(token)


def embedded_init_kwargs(num_cpus: int | None = None, dashboard: bool = True) -> dict[str, Any]:
    """Arguments of `ray.init` for the embedded default: local only, the dashboard (if `dashboard`) on loopback.

    The dashboard is needed by Ray Train only: it serves the State API that Ray Train's controller polls (without it
    every training run logs a warning a second); bound to 127.0.0.1 it is not reachable from outside. A job without a
    train stage starts Ray without it (`needs_dashboard`): ~1-2 s less to its first batch on two cores.
    """
    kwargs: dict[str, Any] = {
        "num_cpus": num_cpus if num_cpus is not None else os.cpu_count(),
        "include_dashboard": dashboard,
        "log_to_driver": True,
        "runtime_env": {"env_vars": dict(WORKER_ENV_VARS)},
    }
    if dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    return kwargs


def connect(address: str | None = None, *, dashboard: bool | None = None) -> Any:
    """Return the `ray` module, initialised. Reuses a Ray already initialised in this process, except one that s2d
    started embedded without the dashboard when `dashboard` is asked for (Ray Train after a generate-only job in the
    same process): that one is shut down and started again with it.

    `dashboard`: whether an embedded Ray started here serves the dashboard; None: as `embedded_dashboard` says
    (on, unless a job without a train stage is running)."""
    try:
        import ray
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("s2d needs Ray: pip install 'ray[data,train]' (or run `make venv`)") from error
    dashboard = _DASHBOARD.get() if dashboard is None else dashboard
    if ray.is_initialized():
        if not (dashboard and _started_without_dashboard(ray)):
            return ray
        log.info("s2d: restarting the embedded Ray with its dashboard (Ray Train needs it)")
        ray.shutdown()
    _without_dashboard["node"] = None
    address = address or os.environ.get("RAY_ADDRESS")
    with _sigterm_handler_kept():
        _init(ray, address, dashboard)
    return ray


def _started_without_dashboard(ray: Any) -> bool:
    node = _without_dashboard["node"]
    return node is not None and ray.get_runtime_context().get_node_id() == node


def _init(ray: Any, address: str | None, dashboard: bool) -> None:
    if os.environ.get(compat_ray.submitted_job_env()):  # set by Ray in a submitted job's driver
        # A job submitted with `s2d submit`: its runtime_env already carries WORKER_ENV_VARS, and Ray refuses
        # a driver runtime_env that repeats keys of the job's.
        ray.init(address=address or "auto", log_to_driver=True)
    elif address:
        ray.init(address=address, runtime_env={"env_vars": dict(WORKER_ENV_VARS)}, log_to_driver=True)
    else:
        ray.init(**embedded_init_kwargs(dashboard=dashboard))
        if not dashboard:
            _without_dashboard["node"] = ray.get_runtime_context().get_node_id()


@contextlib.contextmanager
def _sigterm_handler_kept():
    """`ray.init` replaces the driver's SIGTERM handler with its own (a bare exit with code 15); the caller's (the
    CLI stops a run on SIGTERM the way Ctrl-C does, with one line) is put back."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        yield
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
