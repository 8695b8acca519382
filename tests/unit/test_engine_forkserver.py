"""The engine core's fork server (s2d.actors.engine_forkserver): a process forked from it runs with the environment
its parent had when it started it, as under `spawn`, and keeps the process title vLLM gives it. Real processes from
Python's fork server (no vLLM here: what it serves is tested by the replica's integration tests)."""

from __future__ import annotations

import json
import multiprocessing.forkserver
import os

from s2d.actors import compat_vllm
from s2d.actors.engine_forkserver import EngineContext, EngineServer


def _report(path: str) -> None:
    import setproctitle

    setproctitle.setproctitle("VLLM::EngineCore")  # what vLLM's engine core does first
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as cmdline:
        title = cmdline.read().split(b"\0")[0].decode().strip()
    seen = {name: os.environ.get(name) for name in ("S2D_TEST_SET_LATER", "S2D_TEST_REMOVED_LATER")}
    with open(path, "w") as out:
        json.dump({"environment": seen, "title": title}, out)


def test_an_engine_process_has_its_parents_environment_at_start_and_vllms_title(tmp_path, monkeypatch):
    monkeypatch.setenv("S2D_TEST_REMOVED_LATER", "present when the server started")
    multiprocessing.forkserver.ensure_running()  # the server's own environment has it, and not the other
    monkeypatch.delenv("S2D_TEST_REMOVED_LATER")
    monkeypatch.setenv("S2D_TEST_SET_LATER", "set just before the start")  # vLLM sets OMP_NUM_THREADS so
    report = tmp_path / "report.json"
    process = EngineContext().Process(target=_report, args=(str(report),))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 0
    seen = json.loads(report.read_text())
    assert seen["environment"] == {"S2D_TEST_SET_LATER": "set just before the start", "S2D_TEST_REMOVED_LATER": None}
    assert seen["title"] == "VLLM::EngineCore"  # how tools and the fault tests find the engine


def test_the_servers_preload_is_vllms_cpu_preload_found_without_importing_torch():
    gomp = [part for part in compat_vllm.cpu_preload("").split(":") if "libgomp" in part]
    assert len(gomp) == 1 and os.path.isfile(gomp[0])  # torch's OpenMP runtime, which vLLM's thread binding needs
    # An OpenMP runtime already preloaded is kept, not doubled; a library already there keeps its place before it.
    assert "libgomp" not in compat_vllm.cpu_preload("/opt/intel/libiomp5.so")
    parts = compat_vllm.cpu_preload("/opt/other.so").split(":")
    assert parts.index("/opt/other.so") < parts.index(gomp[0])


def test_a_preload_other_than_the_one_vllm_wants_for_its_engine_is_one_line(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/lib/libgomp.so.1")  # what vLLM's CPU platform set in the replica
    assert EngineServer("/lib/libgomp.so.1").preload_mismatch() is None
    line = EngineServer("").preload_mismatch()
    assert line.startswith("s2d: vLLM preloads '/lib/libgomp.so.1'") and "S2D_ENGINE_FORKSERVER=0" in line
