"""`s2d submit` against a real `ray start --head` cluster with Ray token authentication on.

The cluster is a separate Ray (own temp dir, own ports, loopback only, HOME in a temp dir so no token file
of the user's is picked up). A tiny generate job goes through the job API with the token and is followed to
the end; a submission without the token is refused with s2d's message; the token appears nowhere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# ~2.5 min (a second Ray cluster, a job driver and a vLLM replica): slow tier, next to the multi-node test in the
# default one.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
TINY = [
    "task.num_inputs=4",
    "sampling.n=2",
    "sampling.max_tokens=16",
    "method.name=system1",
    "output.inputs_per_shard=2",
    "generation.cpus_per_replica=0.5",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_under(marker: str) -> list[int]:
    """Pids whose command line names our cluster's temp dir: the processes this test's cluster started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def token_cluster():
    base = Path(tempfile.mkdtemp(prefix="s2d-tok-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    home = base / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    gcs_port, dashboard_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--num-cpus=2",
            f"--temp-dir={base / 'ray'}",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    client_env = {key: value for key, value in env.items() if key != "RAY_AUTH_MODE"}
    client_env["RAY_API_SERVER_ADDRESS"] = url
    try:
        _wait_for_job_api(url, client_env)
        yield {"url": url, "token": token, "env": client_env, "base": base}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in _processes_under(str(base)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_job_api(url: str, env: dict[str, str], timeout: float = 90.0) -> None:
    probe = [sys.executable, "-m", "s2d.engine.cli", "logs", "no-such-job", "--address", url]
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(probe, env=env, cwd=ROOT, capture_output=True, text=True)
        if "no Ray job API" not in result.stderr:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job API at {url} did not come up: {result.stderr}")
        time.sleep(2)


def _s2d(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s2d.engine.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submitted_job_runs_with_the_token_and_writes_shards(token_cluster, tmp_path):
    out = tmp_path / "run"
    result = _s2d(
        ["submit", str(ROOT / "configs" / "demo.yaml"), *TINY, f"out={out}", "--stage", "generate"],
        token_cluster["env"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SUCCEEDED" in result.stderr
    shards = pq.read_table(out / "shards").num_rows
    rejected = pq.read_table(out / "rejected").num_rows
    assert shards + rejected == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"] == 4 and metrics["samples"] == 8
    token = token_cluster["token"]
    assert token not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".yaml"}:
            assert token not in path.read_text(), path
    job_id = result.stderr.split("submitted ", 1)[1].split()[0]
    logs = _s2d(["logs", job_id], token_cluster["env"])
    assert logs.returncode == 0 and "generate: 4 inputs" in logs.stdout
    assert token not in logs.stdout


def test_submission_without_the_token_is_refused_clearly(token_cluster, tmp_path):
    env = {key: value for key, value in token_cluster["env"].items() if not key.startswith("RAY_AUTH")}
    result = _s2d(
        ["submit", str(ROOT / "configs" / "demo.yaml"), *TINY, f"out={tmp_path / 'run'}", "--no-wait"], env, timeout=60
    )
    assert result.returncode == 1
    assert "requires token authentication" in result.stderr and "RAY_AUTH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_relative_out_is_refused_before_anything_is_sent(token_cluster):
    result = _s2d(
        ["submit", str(ROOT / "configs" / "demo.yaml"), *TINY, "out=runs/x", "--no-wait"],
        token_cluster["env"],
        timeout=60,
    )
    assert result.returncode == 1 and "is relative" in result.stderr
