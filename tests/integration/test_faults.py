"""Exactly-once under faults, on real Ray + vLLM: bad input rows, a replica killed with -9, a driver killed with -9.

The default tier runs each kill once on a small job; the slow tier (`test_chaos_rounds`) repeats both kills
on a bigger job with fresh random moments, and prints one line per round for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bad_rows import GOOD, catalogue_file

from s2d.engine.cli import main
from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.manifest import read_manifest
from s2d.engine.data.shards import num_shards_for, read_committed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


INPUTS_PER_SHARD = 3


def chaos_job(num_inputs: int, out: Path) -> list[str]:
    """One input per replica call and a few inputs per shard: many moments at which a kill lands mid-job."""
    return [
        "generate",
        str(DEMO),
        f"task.num_inputs={num_inputs}",
        f"output.inputs_per_shard={INPUTS_PER_SHARD}",
        "generation.batch_size=1",
        "method.name=system1",
        "sampling.n=2",
        "sampling.max_tokens=16",
        "curate.threshold=0.0",
        f"out={out}",
        "--no-progress",
    ]


def assert_exactly_once(out: Path, num_inputs: int) -> None:
    ids = [
        i
        for kind in ("shards", "rejected", "quarantine")
        for i in read_committed(out, kind, columns=["input_id"]).column("input_id").to_pylist()
    ]
    assert len(ids) == len(set(ids)) == num_inputs, f"{len(ids)} rows, {len(set(ids))} distinct, {num_inputs} inputs"
    accounting = check_accounting(out)
    assert accounting.ok and not (out / ".staging").exists(), accounting.problems()
    # The samples table too: each generated input's samples exactly once, none of another input.
    samples = read_committed(out, "samples", columns=["input_id", "sample"]).to_pylist()
    keys = [(row["input_id"], row["sample"]) for row in samples]
    generated = [
        row
        for kind in ("shards", "rejected")
        for row in read_committed(out, kind, columns=["input_id", "num_samples"]).to_pylist()
    ]
    assert len(keys) == len(set(keys)) == sum(row["num_samples"] for row in generated) == accounting.samples > 0
    assert {input_id for input_id, _ in keys} == {row["input_id"] for row in generated}


def _committed_shards(out: Path) -> int:
    """Shards the manifest lists as committed so far (0 before the job has written one)."""
    manifest = read_manifest(out)
    return len(manifest.shards) if manifest else 0


def _replica_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    # This session's Ray by its address: other Ray instances may run on the same machine.
    address = ray.get_runtime_context().gcs_address
    return [
        actor.pid
        for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True)
        if "GenerationReplica" in (actor.class_name or "") and actor.pid
    ]


def sleep_until_kill_moment(out: Path, num_inputs: int, delay: float) -> None:
    """Sleep `delay` seconds, or less: until half the job's shards are committed, whichever comes first.

    A kill meant for mid-job must not land after the job: how fast the replica generates moves twofold between
    hours on two shared cores, so a fixed window either misses the job's end on a fast hour or its start on a slow one.
    """
    half = num_shards_for(num_inputs, INPUTS_PER_SHARD) // 2
    until = time.monotonic() + delay
    while time.monotonic() < until and _committed_shards(out) < half:
        time.sleep(0.05)


def replica_kill_round(out: Path, num_inputs: int, seed: int) -> dict:
    """Run a job in this process; kill -9 its replica at a random moment; the job must finish exactly once."""
    delay = random.Random(seed).uniform(0.5, 6.0)
    kill: dict[str, float] = {}  # the shards committed when it came, and how long after the replica was up

    def kill_when_replica_runs():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if pids := _replica_pids():
                up = time.monotonic()
                sleep_until_kill_moment(out, num_inputs, delay)
                os.kill(pids[0], signal.SIGKILL)
                kill.update(shards=_committed_shards(out), after_s=time.monotonic() - up)
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_when_replica_runs, daemon=True)
    killer.start()
    started = time.monotonic()
    assert main(chaos_job(num_inputs, out)) == 0, f"seed {seed}"
    killer.join(timeout=5)
    total_shards = read_manifest(out).num_shards
    assert kill and kill["shards"] < total_shards, f"the kill (seed {seed}: {kill}) did not land mid-job"
    assert_exactly_once(out, num_inputs)
    return {
        "seed": seed,
        "kill_after_s": round(kill["after_s"], 1),
        "shards_committed_at_kill": kill["shards"],
        "total_shards": total_shards,
        "job_s": round(time.monotonic() - started),
    }


def start_user_job(args: list[str], **popen: object) -> subprocess.Popen:
    """`s2d ARGS` as a user runs it: its own process group and its own embedded Ray (never the tests' one)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "s2d.engine.cli", *args], cwd=ROOT, env=env, start_new_session=True, **popen
    )


def driver_kill_round(out: Path, num_inputs: int, seed: int, capsys) -> dict:
    """Run a job as a user would (its own process and embedded Ray); kill -9 the process group at a random moment
    after its first commit; rerun the same command here: it resumes, and every input lands exactly once."""
    args = chaos_job(num_inputs, out)
    driver = start_user_job(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not _committed_shards(out) and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver never committed a shard"
            time.sleep(0.2)
        sleep_until_kill_moment(out, num_inputs, random.Random(seed).uniform(0.0, 3.0))
        assert driver.poll() is None, f"the job finished before the kill (seed {seed})"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the embedded Ray it started, as in a crash
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    manifest = read_manifest(out)
    entries = manifest.shards.values()
    assert 1 <= len(entries) < manifest.num_shards
    committed = sum(entry.accepted + entry.rejected + entry.quarantined for entry in entries)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"({committed} already committed)" in printed, printed
    assert_exactly_once(out, num_inputs)
    return {
        "seed": seed,
        "shards_committed_at_kill": len(entries),
        "total_shards": manifest.num_shards,
        "inputs_resumed": num_inputs - committed,
    }


def test_bad_rows_are_quarantined_and_good_rows_still_make_shards(tmp_path, ray_session, capsys):
    path, reasons = catalogue_file(tmp_path / "rows.jsonl", with_token_check=True)
    out = tmp_path / "run"
    args = [
        "generate",
        str(DEMO),
        f"data.path={path}",
        "task.name=freeform",
        "data.columns.input=q",
        "data.columns.label=a",
        "method.name=system1",
        "sampling.n=2",
        "sampling.max_tokens=8",
        "curate.threshold=0.0",
        f"out={out}",
        "--no-progress",
    ]
    assert main(args) == 0
    quarantine = read_committed(out, "quarantine").to_pylist()
    assert sorted(row["reason"] for row in quarantine) == sorted(reasons)
    assert all(row["detail"] for row in quarantine)
    token_check = [row for row in quarantine if row["source_row"] is None]
    assert len(token_check) == 1 and "tokens" in token_check[0]["detail"], "the replica's tokenizer caught it"
    assert_exactly_once(out, len(GOOD) + len(reasons))
    generated = len(read_committed(out)) + len(read_committed(out, "rejected"))
    assert generated == len(GOOD), "every good row went through the model"
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert "exactly once" in capsys.readouterr().out


def test_replica_killed_mid_job_is_restarted_and_nothing_is_lost_or_doubled(tmp_path, ray_session):
    # The kill comes 0.5-6 s after the replica is up, or once 4 of the 8 shards are committed if that is sooner.
    result = replica_kill_round(tmp_path / "run", 24, random.randrange(10**6))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["inputs"] == 24, result


def test_driver_killed_mid_job_then_rerun_resumes_exactly_once(tmp_path, ray_session, capsys):
    # 24 inputs (8 shards): shards are written by Ray tasks and committed as their results come back, so a job
    # needs some work left after its first commit for the kill to land mid-job.
    driver_kill_round(tmp_path / "run", 24, random.randrange(10**6), capsys)


def _replica_processes(driver_pid: int) -> list:
    """Replica actors of the Ray that this driver started (its descendants), not of any other Ray on the machine."""
    import psutil

    found = []
    for proc in psutil.Process(driver_pid).children(recursive=True):
        try:
            if "GenerationReplica" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # exited (or a zombie) since it was listed
            continue
    return found


def chaos_round(out: Path, num_inputs: int, seed: int, capsys) -> dict:
    """One job as a user runs it (own process, own embedded Ray): kill -9 its replica at a random moment, then,
    once it committed again, kill -9 the driver at a random moment; rerun the same command here."""
    rng = random.Random(seed)
    args = chaos_job(num_inputs, out)
    log = open(out.parent / f"{out.name}-driver.log", "wb")  # the killed driver's own account, for a failed round
    driver = start_user_job(args, stdout=log, stderr=subprocess.STDOUT)
    committed = lambda: _committed_shards(out)  # noqa: E731
    result = {"seed": seed}
    try:
        deadline = time.monotonic() + 600
        while not (replicas := _replica_processes(driver.pid)):
            assert time.monotonic() < deadline and driver.poll() is None, (
                f"no replica came up: {(out.parent / f'{out.name}-driver.log').read_text()[-2000:]}"
            )
            time.sleep(0.2)
        sleep_until_kill_moment(out, num_inputs, rng.uniform(0.5, 5.0))
        replicas[0].kill()
        result["replica_killed_at_shards"] = committed()
        while committed() <= result["replica_killed_at_shards"]:
            assert time.monotonic() < deadline and driver.poll() is None, "no commit after the replica restart"
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 3.0))
        result["driver_killed_at_shards"] = committed() if driver.poll() is None else None
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    result["total_shards"] = read_manifest(out).num_shards
    capsys.readouterr()
    assert main(args) == 0
    assert_exactly_once(out, num_inputs)
    return result


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_chaos_rounds(tmp_path, ray_session, capsys):
    """The long version: S2D_CHAOS_ROUNDS (10) jobs, each with a replica kill and a driver kill at random moments."""
    rounds = int(os.environ.get("S2D_CHAOS_ROUNDS", "10"))
    results = []
    for round_index in range(rounds):
        started = time.monotonic()
        result = chaos_round(tmp_path / f"round-{round_index}", 20, random.randrange(10**6), capsys)
        results.append({"round": round_index, **result, "seconds": round(time.monotonic() - started)})
        with capsys.disabled():
            print(json.dumps(results[-1]), flush=True)
    assert sum(r["driver_killed_at_shards"] is not None for r in results) >= rounds // 2, results


def test_an_engine_that_cannot_start_fails_the_job_fast_with_the_cause(tmp_path, ray_session, capsys):
    started = time.monotonic()
    code = main([*chaos_job(4, tmp_path / "run"), "engine.max_model_len=100000"])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: the replica's own log
    assert code == 1 and last_line.startswith("s2d: error: generation failed"), last_line
    assert "max_model_len" in last_line and time.monotonic() - started < 180


def _engine_core_pids(replica_pid: int) -> list[int]:
    import psutil

    return [
        child.pid
        for child in psutil.Process(replica_pid).children(recursive=True)
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name()
    ]


@pytest.mark.slow
def test_engine_errors_restart_the_replica_until_the_job_limit(tmp_path, ray_session, capsys):
    """Killing vLLM's engine process (not the actor) is a real engine error: the replica restarts and the job
    completes; with max_engine_failures=1 the same fault fails the job with the error instead."""
    for limit, expect_success in ((2, True), (1, False)):
        out = tmp_path / f"limit-{limit}"
        killed = []

        def kill_engine_core(killed=killed):  # this round's list, bound now
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                for pid in _replica_pids():
                    if cores := _engine_core_pids(pid):
                        time.sleep(2)
                        os.kill(cores[0], signal.SIGKILL)
                        killed.append(cores[0])
                        return
                time.sleep(0.5)

        threading.Thread(target=kill_engine_core, daemon=True).start()
        code = main([*chaos_job(30, out), f"generation.max_engine_failures={limit}"])
        last_line = (capsys.readouterr().err.strip().splitlines() or [""])[-1]
        assert killed, "vLLM's engine process was not found"
        if expect_success:
            assert code == 0, last_line
            assert_exactly_once(out, 30)
        else:
            assert code == 1 and "generation failed" in last_line and "failed 1 time(s)" in last_line, last_line
            assert "EngineProcessDied" in last_line


def test_two_generate_jobs_on_one_out_one_writes_the_other_stops_with_one_line(tmp_path):
    """A double submit: two `s2d generate` on one `out` started together. One holds the output's lease and
    writes every shard; the other stops before touching `out`, with one line naming the holder."""
    out = tmp_path / "run"
    args = [*chaos_job(6, out), "generation.batch_size=2"]
    jobs = [start_user_job(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [job.communicate(timeout=600) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
    codes = [job.returncode for job in jobs]
    assert sorted(codes) == [0, 75], (codes, outputs)
    stdout, stderr = outputs[codes.index(75)]
    lines = [line for line in stderr.splitlines() if line.startswith("s2d:")]
    assert len(lines) == 1 and "is being written by job" in lines[0] and "rerun to resume" in lines[0], stderr
    assert f"pid {jobs[codes.index(0)].pid}" in lines[0], "it names the holder"
    assert "generate:" not in stdout, "the stopped job generated nothing"
    assert_exactly_once(out, 6)
    entries = read_manifest(out).shards.values()
    assert len({entry.job for entry in entries}) == 1, "every shard written once, by one job"
    assert json.loads((out / "metrics.json").read_text())["duplicates_dropped"] == 0
    assert not (out / ".lease.json").exists()
