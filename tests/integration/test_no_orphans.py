"""A stopped job leaves no process behind, engines included, and the same command rerun at once completes exactly
once: kill -9 of the driver's process group (a crash, the OOM killer, a scheduler), SIGTERM to the driver, Ctrl-C,
an engine crash (vLLM's engine core killed: the replica kills its engine and exits, and here, with
generation.max_engine_failures=1, the job fails with the cause); and three kills in a row, each rerun at once.

Every process of a job (the driver, its embedded Ray, the replicas' workers, vLLM's engine processes, the engine
guards) inherits the environment the job was started with, so a tag there finds them all, whoever their parent is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from test_faults import assert_exactly_once, chaos_job, start_user_job

pytestmark = pytest.mark.integration

TAG = "S2D_TEST_JOB_TAG"
GONE_WITHIN_S = 30


def job_processes(tag: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TAG) == tag:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def engines(processes: list[psutil.Process]) -> list[psutil.Process]:
    names = []
    for process in processes:
        try:
            if process.name().startswith("VLLM::") or "VLLM::" in " ".join(process.cmdline()):
                names.append(process)
        except psutil.Error:
            continue
    return names


def engine_cores(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in engines(processes):
        try:
            if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def start_tagged_job(out: Path, num_inputs: int, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    tag = uuid.uuid4().hex
    os.environ[TAG] = tag  # start_user_job copies this process's environment
    try:
        driver = start_user_job(
            [*chaos_job(num_inputs, out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    finally:
        del os.environ[TAG]
    deadline = time.monotonic() + 300
    while not list(out.glob(".parts/*/*")):  # a curated part written: the engines are generating
        assert driver.poll() is None, f"the job ended before it generated: {driver.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the job never started generating"
        time.sleep(0.2)
    assert engines(job_processes(tag)), "no vLLM engine process found for the job"
    return driver, tag


def assert_nothing_left(tag: str, stopped_at: float | None = None) -> None:
    """No process of the job left GONE_WITHIN_S after it was stopped (at `stopped_at`; default: now)."""
    deadline = (time.monotonic() if stopped_at is None else stopped_at) + GONE_WITHIN_S
    while (left := job_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    described = []
    for process in left:
        try:
            described.append(f"{process.pid} {process.name()} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    assert not described, f"{len(described)} processes of the job outlived it by {GONE_WITHIN_S} s: {described}"


def rerun_completes(out: Path, num_inputs: int, extra: tuple[str, ...] = ()) -> None:
    rerun = start_user_job([*chaos_job(num_inputs, out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    assert_exactly_once(out, num_inputs)


def kill_process_group(driver: subprocess.Popen, tag: str) -> None:
    os.killpg(driver.pid, signal.SIGKILL)


def crash_engine(driver: subprocess.Popen, tag: str) -> None:
    """kill -9 of vLLM's engine core only (an engine crash): the replica's watchdog sees it die."""
    cores = engine_cores(job_processes(tag))
    assert cores, "no vLLM engine core process found for the job"
    cores[0].kill()


STOPS = {
    "kill-9-process-group": (kill_process_group, -signal.SIGKILL, ()),
    "sigterm": (lambda driver, tag: driver.send_signal(signal.SIGTERM), 143, ()),
    "ctrl-c": (lambda driver, tag: driver.send_signal(signal.SIGINT), 130, ()),
    # One engine failure is the job's limit: the replica kills its engine, exits, and the job fails with the cause.
    "engine-crash": (crash_engine, 1, ("generation.max_engine_failures=1",)),
}


def stop_job(out: Path, num_inputs: int, how: str, wait_s: float = GONE_WITHIN_S) -> str:
    """Start a job, stop it `how` mid-generation, check its exit code; its tag."""
    stop, code, extra = STOPS[how]
    driver, tag = start_tagged_job(out, num_inputs, extra)
    stop(driver, tag)
    try:
        driver.wait(timeout=wait_s)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    err = driver.stderr.read().decode()
    assert driver.returncode == code, err[-2000:]
    if how == "engine-crash":  # the cause: the watchdog's EngineProcessDied, or the request that saw the engine die
        assert "the vLLM engine failed 1 time(s)" in err.strip().splitlines()[-1], err[-2000:]
    return tag


@pytest.mark.parametrize(
    "how",
    [
        "kill-9-process-group",
        # SIGTERM and Ctrl-C (2.5 min each): slow tier. Both end in the kill -9 case's cleanup path plus the CLI's
        # KeyboardInterrupt handling, which tests/unit/test_cli.py checks for SIGTERM in the default tier.
        pytest.param("sigterm", marks=pytest.mark.slow),
        pytest.param("ctrl-c", marks=pytest.mark.slow),
        pytest.param("engine-crash", marks=pytest.mark.slow),
    ],
)
def test_a_stopped_job_leaves_no_process_and_its_rerun_completes(tmp_path, how):
    out, num_inputs = tmp_path / "run", 24
    # An engine crash: the watchdog (2 s), the failure's record and the job's stop come before the driver exits.
    tag = stop_job(out, num_inputs, how, wait_s=GONE_WITHIN_S + (60 if how == "engine-crash" else 0))
    assert_nothing_left(tag)
    rerun_completes(out, num_inputs, STOPS[how][2])


@pytest.mark.slow
def test_three_kills_in_a_row_each_rerun_at_once_all_complete(tmp_path):
    """kill -9 of the process group, three times in a row on this machine, each rerun at once (not waiting for the
    killed job's processes to go): an engine left behind would hold the memory the next engines need."""
    for round_index in range(3):
        out, num_inputs = tmp_path / f"round-{round_index}", 24
        tag = stop_job(out, num_inputs, "kill-9-process-group")
        killed_at = time.monotonic()
        rerun_completes(out, num_inputs)
        assert_nothing_left(tag, killed_at)
