"""How full a replica keeps its engine: the recorder's means (busy, fed), their merge over restarts, the display; and
the one-process CPU engine layout that cuts its start."""

from __future__ import annotations

import threading

import pytest

from s2d.actors.occupancy import SERIES_SAMPLES, OccupancyRecorder, by_replica, merge, start_sampling
from s2d.engine.stages.progress import JobProgress


def recorder_with(samples: list[tuple[int, int]], cap: int = 100) -> OccupancyRecorder:
    recorder = OccupancyRecorder(cap, clock=iter(range(100_000)).__next__)
    for sequences, batches in samples:
        recorder.record(sequences, batches)
    return recorder


def test_running_is_capped_and_idle_time_is_not_counted():
    # Above the cap the rest wait: running = min(held, cap). A replica holding no batch is idle, not under-fed.
    figures = merge([recorder_with([(300, 2), (100, 2), (50, 1), (0, 0), (0, 0)]).summary()])
    assert figures["mean_running"] == pytest.approx((100 + 100 + 50) / 3, abs=0.1)
    assert figures["mean_pct"] == pytest.approx(83.3, abs=0.1)
    assert figures["fed_pct"] == 100.0  # while a batch waited behind the running one, the engine was full
    assert figures["busy_samples"] == 3


def test_a_replica_never_fed_has_no_fed_figure():
    figures = merge([recorder_with([(40, 1), (20, 1)]).summary()])
    assert figures["fed_pct"] is None and figures["mean_pct"] == 30.0


def test_restarted_lives_merge_by_their_samples():
    first = recorder_with([(100, 2)] * 3).summary()  # 3 samples full
    second = recorder_with([(0, 2)]).summary()  # 1 sample empty (a fresh engine starting its first batch)
    assert merge([first, second])["fed_pct"] == 75.0
    assert by_replica({"actor-a": {"1": first, "2": second}, "actor-b": {"7": first}}) == {
        "replica 1": merge([first, second]),
        "replica 2": merge([first]),
    }


def test_nothing_reported_gives_no_figure_and_a_bad_cap_is_refused():
    assert merge([])["mean_pct"] is None
    with pytest.raises(ValueError, match="cap"):
        OccupancyRecorder(0)


def test_the_series_is_bounded():
    recorder = recorder_with([(1, 1)] * (SERIES_SAMPLES + 10))
    assert len(recorder.series) == SERIES_SAMPLES
    assert recorder.summary()["busy_samples"] == SERIES_SAMPLES + 10  # the means count every sample


def test_sampling_thread_samples_reports_and_stops():
    recorder = OccupancyRecorder(8)
    stopped, reported = threading.Event(), threading.Event()
    thread = start_sampling(
        recorder, lambda: 8, lambda: 2, stopped, interval_s=0.01, on_tick=reported.set, tick_every_s=0
    )
    assert reported.wait(5)
    stopped.set()
    thread.join(5)
    assert not thread.is_alive() and merge([recorder.summary()])["fed_pct"] == 100.0


def test_progress_line_and_snapshot_show_each_replica():
    progress = JobProgress(total_inputs=10)
    assert "engine" not in progress.postfix() and progress.snapshot()["occupancy_mean_pct"] is None
    progress.occupancy = {
        "replica 1": {"mean_pct": 92.4, "fed_pct": 99.0},
        "replica 2": {"mean_pct": 81.0, "fed_pct": None},
    }
    assert progress.postfix()["engine"] == "92/81%"
    snapshot = progress.snapshot()
    assert snapshot["occupancy_mean_pct"] == 86.7 and snapshot["occupancy_fed_pct"] == 99.0
    assert snapshot["occupancy_by_replica"]["replica 2"]["mean_pct"] == 81.0
    progress.occupancy = {f"replica {i}": {"mean_pct": float(50 + i)} for i in range(6)}
    assert progress.postfix()["engine"] == "50-55%"


def test_a_one_worker_cpu_engine_runs_its_worker_in_the_engine_core_process(monkeypatch):
    from s2d.actors.vllm_backend import cpu_engine_env
    from s2d.engine.core.spec import EngineSpec

    monkeypatch.delenv("S2D_ENGINE_WORKER_PROCESS", raising=False)
    assert cpu_engine_env(EngineSpec()) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert cpu_engine_env(EngineSpec(tensor_parallel_size=2)) == {}  # several workers: vLLM's own processes
    monkeypatch.setenv("S2D_ENGINE_WORKER_PROCESS", "1")  # benchmarks: the layout before issue 26
    assert cpu_engine_env(EngineSpec()) == {}
