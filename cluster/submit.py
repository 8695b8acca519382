"""`s2d submit`, `s2d logs`, `s2d stop`: run a job on an existing Ray cluster through Ray's job submission API.

The submission is plain data built by `build_submission` (tests inspect it): the entrypoint runs the s2d CLI
with the cluster's Python; the runtime_env ships the `s2d` package (`py_modules`, staged by `stage_package`) and
a working dir holding only the resolved job file, so nothing of the local checkout (.venv, .cache, runs, .git)
travels. The Ray auth token is read by Ray's own client from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token and sent as a request header; s2d never copies it into the submission, the job's environment,
its logs or outputs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from s2d.cluster.connect import WORKER_ENV_VARS
from s2d.engine.core.spec import JobSpec, dump_spec

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
JOB_FILE = "job.yaml"
SUBPACKAGES = ("engine", "actors", "training", "cluster")  # s2d.engine, ...: folders of their own in a checkout
# Never shipped even if a package folder holds them.
EXCLUDES = ["__pycache__", "*.pyc", ".venv", ".cache", "runs", ".git"]
# Local environment passed to the job when set: the model cache, so a packaged model is not converted again.
PASSED_ENV = ("S2D_CACHE",)
SECRET_ENV_PREFIXES = ("RAY_AUTH",)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(RuntimeError):
    """A submission that cannot be made: bad job file for a cluster, unreachable or refusing cluster."""


@dataclass(frozen=True)
class Submission:
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]


def dashboard_address(address: str | None = None) -> str:
    """The job API address: --address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS (as `ray job` reads them)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD
    return address if "://" in address else f"http://{address}"


def is_local_address(address: str) -> bool:
    return urlparse(dashboard_address(address)).hostname in {"127.0.0.1", "localhost", "::1"}


def job_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """env_vars of the job: what replicas need, plus the passed-through local settings; never a Ray auth secret."""
    environ = dict(os.environ if environ is None else environ)
    env = dict(WORKER_ENV_VARS)
    env.update({name: environ[name] for name in PASSED_ENV if environ.get(name)})
    return {key: value for key, value in env.items() if not key.startswith(SECRET_ENV_PREFIXES)}


def build_submission(
    spec: JobSpec,
    stage: str,
    working_dir: str,
    python: str,
    environ: dict[str, str] | None = None,
    *,
    package: str,
    flags: tuple[str, ...] = (),
) -> Submission:
    """Entrypoint and runtime_env of one s2d job; `working_dir` holds the resolved job file (see `stage_job_dir`),
    `package` the s2d package (see `stage_package`); `flags` are passed on to the stage (--force, --allow-partial)."""
    check_submittable(spec)
    entrypoint = " ".join([python, "-m", "s2d.engine.cli", stage, JOB_FILE, "--no-progress", *flags])
    runtime_env = {
        "working_dir": working_dir,
        "py_modules": [package],
        "excludes": list(EXCLUDES),
        "env_vars": job_environment(environ),
    }
    return Submission(entrypoint, runtime_env, {"s2d_stage": stage, "s2d_out": spec.out, "s2d_model": spec.model})


def check_submittable(spec: JobSpec) -> None:
    if not Path(spec.out).is_absolute():
        raise SubmitError(
            f"out={spec.out!r} is relative: a submitted job runs in a temporary directory on the cluster; give an "
            "absolute path on storage the cluster's nodes share (out=/shared/s2d/runs/name)"
        )


def stage_job_dir(spec: JobSpec) -> str:
    """A fresh directory holding only the resolved job file (overrides applied): the job's working_dir."""
    directory = tempfile.mkdtemp(prefix="s2d-submit-")
    (Path(directory) / JOB_FILE).write_text(dump_spec(spec))
    return directory


def stage_package() -> str:
    """A fresh copy of the imported `s2d` package as one folder, `<tmp>/s2d`: what Ray's py_modules ships. In a
    checkout (an editable install) s2d.engine, s2d.actors ... are the repository's own folders, not under s2d/."""
    package = Path(tempfile.mkdtemp(prefix="s2d-package-")) / "s2d"
    ignore = shutil.ignore_patterns(*EXCLUDES)
    shutil.copytree(_folder_of("s2d"), package, ignore=ignore)
    for name in SUBPACKAGES:
        if not (package / name).is_dir():
            shutil.copytree(_folder_of(f"s2d.{name}"), package / name, ignore=ignore)
    return str(package)


def _folder_of(package: str) -> Path:
    return Path(importlib.util.find_spec(package).origin).parent


def client(address: str | None) -> Any:
    """A JobSubmissionClient; an auth token in the environment turns on Ray's token mode for this process."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("s2d submit needs Ray's job client: pip install 'ray[default]'") from error
    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except AuthenticationError:
        raise SubmitError(refused_message(url)) from None
    except ConnectionError as error:
        raise SubmitError(
            f"no Ray job API at {url} ({error.__class__.__name__}); start the cluster or pass "
            "--address http://HEAD:8265"
        ) from None


def refused_message(url: str) -> str:
    return (
        f"the Ray cluster at {url} refused the request: it requires token authentication and no valid token "
        "was given. Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or put the token in ~/.ray/auth_token), "
        "e.g. from `ray get-auth-token` on the head node"
    )


def _guard(call: Callable[[], Any], url: str) -> Any:
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError:
        raise SubmitError(refused_message(url)) from None
    except RuntimeError as error:  # the client reports HTTP errors (unknown job id, ...) as RuntimeError
        raise SubmitError(str(error).splitlines()[0]) from None


def submit(
    spec: JobSpec, stage: str, address: str | None, python: str | None = None, flags: tuple[str, ...] = ()
) -> str:
    """Submit the job; returns its submission id."""
    check_submittable(spec)
    url = dashboard_address(address)
    python = python or (sys.executable if is_local_address(url) else "python")
    job_client = client(address)
    working_dir, package = stage_job_dir(spec), stage_package()
    try:
        submission = build_submission(spec, stage, working_dir, python, package=package, flags=flags)
        return _guard(
            lambda: job_client.submit_job(
                entrypoint=submission.entrypoint, runtime_env=submission.runtime_env, metadata=submission.metadata
            ),
            url,
        )
    finally:
        for staged in (working_dir, Path(package).parent):  # uploaded by submit_job
            shutil.rmtree(staged, ignore_errors=True)


def follow(
    job_id: str,
    address: str | None,
    write: Callable[[str], Any] = sys.stdout.write,
    poll_s: float = 2.0,
    follow_logs: bool = True,
) -> str:
    """Print the job's logs as they grow until it ends; returns its final status."""
    url = dashboard_address(address)
    job_client = client(address)
    printed = 0
    while True:
        status = str(_guard(lambda: job_client.get_job_status(job_id), url).value)
        if follow_logs:
            logs = _guard(lambda: job_client.get_job_logs(job_id), url)
            write(logs[printed:])
            printed = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def logs(job_id: str, address: str | None) -> str:
    url = dashboard_address(address)
    job_client = client(address)
    return _guard(lambda: job_client.get_job_logs(job_id), url)


def stop(job_id: str, address: str | None) -> bool:
    url = dashboard_address(address)
    job_client = client(address)
    return bool(_guard(lambda: job_client.stop_job(job_id), url))
