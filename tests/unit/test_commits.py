"""s2d.engine.data.commits: the driver's loop over pipeline output wakes up to commit between batches (with_ticks);
its commits are fenced by the lease, so a replaced job's late writes never become visible (ShardCommits)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from fencing_scene import NUM_SHARDS, PER_SHARD, open_scene, visible_files, write_part

from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.commits import SHARD_WRITES_IN_FLIGHT, ShardCommits, with_ticks
from s2d.engine.data.lease import Lease, LeaseLost
from s2d.engine.data.manifest import read_manifest, shard_name
from s2d.engine.data.ownership import is_owned_name
from s2d.engine.data.shards import KINDS, PARTS, open_output, read_committed


def slow_items(delays: list[float], pulled: list[int] | None = None):
    for index, delay in enumerate(delays):
        time.sleep(delay)
        if pulled is not None:
            pulled.append(index)
        yield index


def test_items_come_through_in_order_with_ticks_while_one_is_slow():
    seen = list(with_ticks(slow_items([0.0, 0.6, 0.0]), interval=0.1))
    assert [item for item in seen if item is not None] == [0, 1, 2]
    assert seen[0] == 0 and seen[-1] == 2
    ticks = seen.index(1) - 1  # the Nones between item 0 and item 1
    assert ticks >= 2 and all(item is None for item in seen[1 : seen.index(1)])


def test_no_ticks_when_items_come_faster_than_the_interval():
    assert list(with_ticks(iter(range(100)), interval=5.0)) == list(range(100))


def test_an_error_of_the_pipeline_is_raised_in_the_consumer():
    def failing():
        yield "first"
        raise RuntimeError("replica died")

    consumed = with_ticks(failing(), interval=1.0)
    assert next(consumed) == "first"
    with pytest.raises(RuntimeError, match="replica died"):
        next(consumed)


def test_the_puller_reads_at_most_one_ahead_and_stops_when_the_consumer_does():
    pulled: list[int] = []
    consumed = with_ticks(slow_items([0.0] * 50, pulled), interval=1.0)
    assert next(consumed) == 0
    time.sleep(0.3)
    assert len(pulled) <= 3  # the one handed over, one waiting in the hand-off, one the puller holds
    consumed.close()
    time.sleep(0.5)
    assert len(pulled) <= 3
    assert not [thread for thread in threading.enumerate() if thread.name == "s2d-pipeline-output"]


# --- Fencing: a replaced job's late writes never become visible (s2d.engine.data.lease, shard_tasks, commits) ---


class InlineRay:
    """The part of Ray's API ShardCommits uses, in this process: an actor's call runs only when the driver waits for
    it, so a test decides when a job's writer writes (after its lease was taken over: a late write)."""

    class exceptions:  # noqa: N801 - Ray's name
        RayTaskError = RuntimeError

    class Ref:
        def __init__(self, fn, args):
            self.fn, self.args, self.done, self.result = fn, args, False, None

        def run(self):
            if not self.done:
                self.result, self.done = self.fn(*self.args), True
            return self

    def remote(self, cls):
        ray = self

        class Actor:  # an instance of `cls` whose methods' calls are Refs
            def __init__(self, *args):
                self.instance = cls(*args)

            def __getattr__(self, name):
                method = getattr(self.instance, name)
                return type("Method", (), {"remote": staticmethod(lambda *args: ray.Ref(method, args))})()

        class ActorClass:
            def options(self, **_):
                return self

            def remote(self, *args):
                return Actor(*args)

        return ActorClass()

    def kill(self, actor):
        pass

    def wait(self, refs, num_returns, timeout):
        return [ref.run() for ref in refs], []

    def get(self, ref):
        return ref.run().result


def test_shards_are_written_by_writers_started_before_the_plan_one_per_write_in_flight(tmp_path):
    location, spec, plan = open_scene(tmp_path / "run")
    with Lease.acquire(tmp_path / "run") as lease:
        commits = ShardCommits(location, read_manifest(tmp_path / "run"), lease, spec, NUM_SHARDS)
        commits.start_writers(InlineRay(), 8)  # with the job, beside the engines' start
        writers = list(commits.writers)
        assert len(writers) == min(8, SHARD_WRITES_IN_FLIGHT, NUM_SHARDS)
        commits.start(InlineRay(), plan)
        assert commits.writers == writers  # the same ones: started once
        for shard in range(NUM_SHARDS):
            commits.add_part(shard, PER_SHARD, write_part(location, lease.fence, shard, "x", "p.parquet"))
        writers_busy = {writer for _, writer in commits.in_flight.values()}
        assert len(commits.in_flight) == NUM_SHARDS and len(writers_busy) == NUM_SHARDS
        commits.finish()
        assert commits.writers == [] and check_accounting(tmp_path / "run").ok


def _take_over(out, stalled):
    time.sleep(0.4)  # past the stalled holder's timeout: its heartbeat never beat
    taker = Lease.acquire(out, heartbeat_s=3600, timeout_s=0.3)
    assert taker.taken_over["owner"] == stalled.owner and taker.epoch == stalled.epoch + 1
    return taker


def _stalled_job(out):
    """(location, lease, commits) of a job whose heartbeat never beats: its lease goes stale after 0.3 s."""
    location, spec, plan = open_scene(out)
    stalled = Lease.acquire(out, heartbeat_s=3600, timeout_s=0.3)
    old = ShardCommits(location, read_manifest(out), stalled, spec, NUM_SHARDS)
    old.start(InlineRay(), plan)
    return location, stalled, old


def test_a_late_write_of_a_job_whose_lease_was_taken_over_never_becomes_visible(tmp_path):
    out = tmp_path / "run"
    location, stalled, old = _stalled_job(out)
    old.add_part(0, PER_SHARD, write_part(location, stalled.fence, 0, "old", "part-a.parquet"))  # launched, not run

    taker = _take_over(out, stalled)
    location, spec, plan = open_scene(out)  # the new holder opens the output: it deletes what no commit owns
    new = ShardCommits(location, read_manifest(out), taker, spec, NUM_SHARDS)
    new.start(InlineRay(), plan)
    # The replaced job's workers go on late: parts of both shards (its pipeline still runs), beside the new holder's.
    for shard in range(NUM_SHARDS):
        write_part(location, stalled.fence, shard, "old", "part-late.parquet")
    for shard in range(NUM_SHARDS):
        new.add_part(shard, PER_SHARD, write_part(location, taker.fence, shard, "new", "part-b.parquet"))
    new.finish()
    with pytest.raises(LeaseLost, match="lost its lease"):
        old.finish()  # its shard write runs now, late (its files are staged), and its driver tries to commit it

    manifest = read_manifest(out)
    assert {entry.job for entry in manifest.shards.values()} == {taker.owner}
    answers = read_committed(out, "shards", columns=["answer"]).column("answer").to_pylist()  # verified reads
    assert answers == ["new"] * NUM_SHARDS * PER_SHARD, "no late row of the replaced job, none counted twice"
    assert visible_files(out) == {kind: [shard_name(s) for s in range(NUM_SHARDS)] for kind in visible_files(out)}
    late = sorted(path.name for path in (out / "shards").iterdir() if stalled.fence in path.name)
    assert len(late) == 1 and late[0].startswith(".") and is_owned_name(late[0]), "its file is staged, hidden"
    assert check_accounting(out).ok

    taker.release()
    with Lease.acquire(out) as next_job:  # the next job that opens the output deletes the late leftovers
        assert next_job.epoch == taker.epoch + 1
        open_output(location, NUM_SHARDS, "fp", NUM_SHARDS * PER_SHARD, force=False, keep_samples=False)
    assert not [path for path in out.rglob("*") if stalled.fence in str(path)]
    assert read_committed(out, "shards", columns=["answer"]).num_rows == NUM_SHARDS * PER_SHARD


def test_a_job_that_lost_its_lease_publishes_nothing_even_when_its_write_finished_first(tmp_path):
    """The shard write finishes before the takeover; the commit comes after it: nothing is renamed into place."""
    out = tmp_path / "run"
    location, stalled, old = _stalled_job(out)
    old.add_part(0, PER_SHARD, write_part(location, stalled.fence, 0, "old", "part-a.parquet"))
    old.last_commit = time.monotonic()  # its next commit is not due yet...
    old.poll(wait=False)  # ...when its shard's files are written (staged) and collected
    assert 0 in old.finished
    taker = _take_over(out, stalled)
    with pytest.raises(LeaseLost):
        old.commit(force=True)
    assert visible_files(out) == {kind: [] for kind in visible_files(out)}
    assert read_manifest(out).shards == {}
    taker.release()


def test_the_holder_publishes_staged_files_under_the_shards_own_name_with_their_checksums(tmp_path):
    out = tmp_path / "run"
    location, spec, plan = open_scene(out)
    with Lease.acquire(out) as lease:
        commits = ShardCommits(location, read_manifest(out), lease, spec, NUM_SHARDS)
        commits.start(InlineRay(), plan)
        for shard in range(NUM_SHARDS):
            commits.add_part(shard, PER_SHARD, write_part(location, lease.fence, shard, "x", "part-0.parquet"))
        commits.finish()
    assert [name for kind in KINDS for name in os.listdir(out / kind) if name.startswith(".")] == []
    assert check_accounting(out).ok and not list((out / PARTS).rglob("*.parquet"))


def test_an_output_left_by_the_unfenced_layout_resumes(tmp_path):
    """An interrupted job of the layout before fencing left parts in `.parts/shard-NNNNN/`, an uncommitted shard
    file and a temporary name, and a lease record without an epoch: the fenced job deletes them and completes."""
    out = tmp_path / "run"
    location, spec, plan = open_scene(out)
    unfenced = out / PARTS / "shard-00000"  # the old parts folder
    unfenced.mkdir(parents=True)
    (unfenced / "part-unfenced.parquet").write_bytes(b"rows of the interrupted job")
    (out / "shards" / "shard-00001.parquet").write_bytes(b"an uncommitted shard of an interrupted commit")
    (out / "shards" / ".shard-00000.parquet.0123abcd.tmp").write_bytes(b"a temporary file")
    (out / ".lease.json").write_text('{"owner": "old", "host": "elsewhere", "pid": 1, "heartbeat": 0}')
    with Lease.acquire(out) as lease:
        assert lease.epoch == 1
        location, spec, plan = open_scene(out)
        commits = ShardCommits(location, read_manifest(out), lease, spec, NUM_SHARDS)
        commits.start(InlineRay(), plan)
        for shard in range(NUM_SHARDS):
            commits.add_part(shard, PER_SHARD, write_part(location, lease.fence, shard, "new", "part-0.parquet"))
        commits.finish()
    answers = read_committed(out, "shards", columns=["answer"]).column("answer").to_pylist()
    assert answers == ["new"] * NUM_SHARDS * PER_SHARD and check_accounting(out).ok
    assert sorted(os.listdir(out / "shards")) == [shard_name(shard) for shard in range(NUM_SHARDS)]
    assert not unfenced.exists()


def test_a_commit_loop_without_progress_stops_the_job_with_one_line(tmp_path, monkeypatch):
    """A replica or a pipeline task that hangs past the lease's progress window stops the job (its engines are
    stopped by the stage's teardown, its output resumable) instead of holding it forever."""
    from s2d.engine.data import commits as commits_module

    monkeypatch.setattr(commits_module, "progress_window", lambda spec: 0.2)
    out = tmp_path / "run"
    location, spec, plan = open_scene(out)
    with Lease.acquire(out) as lease:
        commits = ShardCommits(location, read_manifest(out), lease, spec, NUM_SHARDS)
        commits.start(InlineRay(), plan)
        commits.add_part(0, 1, write_part(location, lease.fence, 0, "x", "part-0.parquet"))  # progress
        commits.poll()
        time.sleep(0.3)  # then nothing arrives
        with pytest.raises(commits_module.JobStalled, match=r"no progress for \d+ s .*rerun the same command"):
            commits.poll()
        lease.check()  # stopped by the job itself, before the lease went stale
