"""A stopped job leaves no process behind, engines included, and the same command rerun at once completes exactly
once: kill -9 of the driver's process group (a crash, the OOM killer, a scheduler), SIGTERM to the driver, Ctrl-C.

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


def start_tagged_job(out: Path, num_inputs: int) -> tuple[subprocess.Popen, str]:
    tag = uuid.uuid4().hex
    os.environ[TAG] = tag  # start_user_job copies this process's environment
    try:
        driver = start_user_job(chaos_job(num_inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        del os.environ[TAG]
    deadline = time.monotonic() + 300
    while not list(out.glob(".parts/*/*")):  # a curated part written: the engines are generating
        assert driver.poll() is None, f"the job ended before it generated: {driver.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the job never started generating"
        time.sleep(0.2)
    assert engines(job_processes(tag)), "no vLLM engine process found for the job"
    return driver, tag


def assert_nothing_left(tag: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := job_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    described = []
    for process in left:
        try:
            described.append(f"{process.pid} {process.name()} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    assert not described, f"{len(described)} processes of the job outlived it by {GONE_WITHIN_S} s: {described}"


def rerun_completes(out: Path, num_inputs: int) -> None:
    rerun = start_user_job(chaos_job(num_inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    assert_exactly_once(out, num_inputs)


@pytest.mark.parametrize(
    "stop, code",
    [
        (lambda driver: os.killpg(driver.pid, signal.SIGKILL), -signal.SIGKILL),
        (lambda driver: driver.send_signal(signal.SIGTERM), 143),
        (lambda driver: driver.send_signal(signal.SIGINT), 130),
    ],
    ids=["kill-9-process-group", "sigterm", "ctrl-c"],
)
def test_a_stopped_job_leaves_no_process_and_its_rerun_completes(tmp_path, stop, code):
    out, num_inputs = tmp_path / "run", 24
    driver, tag = start_tagged_job(out, num_inputs)
    stop(driver)
    try:
        driver.wait(timeout=GONE_WITHIN_S)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == code, driver.stderr.read().decode()[-2000:]
    assert_nothing_left(tag)
    rerun_completes(out, num_inputs)
