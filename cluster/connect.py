"""Connect the driver to Ray: the embedded local cluster by default, an existing one by address."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from s2d.cluster import compat_ray

# vLLM's Ray metrics import `ray.serve`; s2d reports its own metrics, so keep vLLM's off (FACTS.md).
WORKER_ENV_VARS = {"VLLM_USE_RAY_METRICS": "0", "TOKENIZERS_PARALLELISM": "false"}


def embedded_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """Arguments of `ray.init` for the embedded default: local only, dashboard on loopback.

    The dashboard stays on because it serves the State API that Ray Train's controller polls (without it
    every training run logs a warning a second); bound to 127.0.0.1 it is not reachable from outside.
    """
    return {
        "num_cpus": num_cpus if num_cpus is not None else os.cpu_count(),
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "log_to_driver": True,
        "runtime_env": {"env_vars": dict(WORKER_ENV_VARS)},
    }


def connect(address: str | None = None) -> Any:
    """Return the `ray` module, initialised. Reuses a Ray already initialised in this process."""
    try:
        import ray
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("s2d needs Ray: pip install 'ray[data,train]' (or run `make venv`)") from error
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    with _sigterm_handler_kept():
        _init(ray, address)
    return ray


def _init(ray: Any, address: str | None) -> None:
    if os.environ.get(compat_ray.submitted_job_env()):  # set by Ray in a submitted job's driver
        # A job submitted with `s2d submit`: its runtime_env already carries WORKER_ENV_VARS, and Ray refuses
        # a driver runtime_env that repeats keys of the job's.
        ray.init(address=address or "auto", log_to_driver=True)
    elif address:
        ray.init(address=address, runtime_env={"env_vars": dict(WORKER_ENV_VARS)}, log_to_driver=True)
    else:
        ray.init(**embedded_init_kwargs())


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
