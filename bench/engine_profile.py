"""Where a benchmark run's CPU time goes, and how full the engine is while it runs (for the *_vs_vllm benches).

- `cpu_snapshot` / `cpu_by_role`: CPU seconds of every process on the machine over a run, grouped by role
  (the side's front end: the bench script or the replica actor; vLLM's engine core; vLLM's worker, which runs
  the model; Ray's daemons and idle workers; anything else on the machine), next to the cores' wall capacity.
- `format_occupancy`: the engine's occupancy per side, as % of its cap; for a replica also its own figures
  (s2d.actors.occupancy: while it held a batch, and while a batch waited behind the one it ran).
- `OccupancySampler`: samples, every `interval_s`, the sequences the engine front end holds unfinished (each of
  a request's n samples counts once: vLLM runs them as child requests), i.e. waiting + running in the engine.
  Below the engine's `max_num_seqs` the running batch has room that nothing fills: at a step barrier, or at
  the end of a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ROLES = ("front end", "engine core", "engine worker", "ray", "other")


def cpu_snapshot() -> dict:
    import psutil

    processes = {}
    for process in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = process.info
        if info["cpu_times"] is None:
            continue
        times = info["cpu_times"]
        processes[info["pid"]] = (
            # The name too: vLLM retitles its processes (setproctitle), and the title is not always in cmdline.
            " ".join([info["name"] or "", *(info["cmdline"] or [])]),
            times.user + times.system,
        )
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    preempted = sum(
        _involuntary_switches(pid)
        for pid, (command, _) in processes.items()
        if role(command, set(), pid) == "engine worker"
    )
    return {
        "at": time.perf_counter(),
        "processes": processes,
        "machine_busy": busy,
        "worker_preempted": preempted,
    }


def _involuntary_switches(pid: int) -> int:
    """Times any thread of the process was descheduled while it could still run (another process took its core)."""
    import glob

    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as lines:
                total += next(
                    (int(line.split()[1]) for line in lines if line.startswith("nonvoluntary_ctxt")),
                    0,
                )
        except OSError:
            continue
    return total


def role(command: str, front_end_pids: set[int], pid: int) -> str:
    lowered = command.lower()
    if pid in front_end_pids or "generationreplica" in lowered:
        return "front end"
    if "enginecore" in lowered:
        return "engine core"
    if "vllm::worker" in lowered or "vllmworker" in lowered:
        return "engine worker"
    if any(
        name in lowered
        for name in (
            "gcs_server",
            "raylet",
            "ray::",
            "/ray/",
            "ray/_private",
            "dashboard",
        )
    ):
        return "ray"
    return "other"


def cpu_by_role(before: dict, after: dict, front_end_pids: set[int]) -> dict[str, float]:
    """CPU seconds per role between two snapshots, plus `wall` (s), `capacity` (wall x cores) and `machine`
    (all busy CPU seconds on the machine, which also counts processes that started and ended in between)."""
    import os

    seconds = dict.fromkeys(ROLES, 0.0)
    for pid, (command, cpu) in after["processes"].items():
        earlier = before["processes"].get(pid)
        used = cpu - earlier[1] if earlier is not None and earlier[0] == command else cpu
        seconds[role(command, front_end_pids, pid)] += max(used, 0.0)
    wall = after["at"] - before["at"]
    return {
        **{name: round(value, 2) for name, value in seconds.items()},
        "wall": round(wall, 2),
        "capacity": round(wall * (os.cpu_count() or 1), 2),
        "machine": round(after["machine_busy"] - before["machine_busy"], 2),
        "worker_preempted": after["worker_preempted"] - before["worker_preempted"],
    }


class OccupancySampler:
    """Samples `count()` (unfinished sequences in an engine) every `interval_s` on a thread of its own."""

    def __init__(self, count: Callable[[], int], cap: int, interval_s: float = 0.05):
        self.count, self.cap, self.interval_s = count, cap, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s2d-occupancy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(int(self.count()))
            except Exception:  # noqa: BLE001 - a dict resized under us: skip the sample
                continue

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        samples = self.samples or [0]
        return {
            "max_num_seqs": self.cap,
            "mean_unfinished": round(sum(samples) / len(samples), 1),
            "mean_running": round(sum(min(s, self.cap) for s in samples) / len(samples), 1),
            "below_cap": round(sum(s < self.cap for s in samples) / len(samples), 3),
            "mean_pct": round(100 * sum(min(s, self.cap) for s in samples) / len(samples) / self.cap, 1),
            "samples": len(samples),
        }


def engine_counter(engine) -> tuple[Callable[[], int], int]:
    """For vLLM's `LLMEngine` (inside `LLM`) or `AsyncLLM`: the unfinished-sequence count and max_num_seqs."""
    processor = engine.output_processor
    return (lambda: len(processor.request_states)), engine.vllm_config.scheduler_config.max_num_seqs


def replica_occupancy(before: dict, after: dict) -> dict:
    """A replica's own occupancy figures (s2d.actors.occupancy) over a run: the difference of two summaries.
    `mean_pct` counts while it held a batch; `fed_pct` while a batch waited behind the one it ran (outside the
    run's last batch)."""
    from s2d.actors.occupancy import merge

    run = {key: after[key] - before[key] for key in after if key != "cap"} | {"cap": after["cap"]}
    figures = merge([run])
    return {"replica_mean_pct": figures["mean_pct"], "replica_fed_pct": figures["fed_pct"]}


def format_occupancy(occupancy: dict) -> str:
    """One line: the engine's mean running sequences as % of its cap, per what each side measured."""
    parts = [f"{occupancy.get('mean_pct', 0):.1f}% of the cap over the run (50 ms samples)"]
    if occupancy.get("replica_mean_pct") is not None:
        parts.append(f"replica: {occupancy['replica_mean_pct']:.1f}% while it held a batch")
    if occupancy.get("replica_fed_pct") is not None:
        parts.append(f"{occupancy['replica_fed_pct']:.1f}% while a batch waited behind (outside the last batch)")
    if occupancy.get("batches_in_flight"):
        parts.append(f"{occupancy['batches_in_flight']} batches in flight")
    return "; ".join(parts)
