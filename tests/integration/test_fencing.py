"""Fencing on real Ray and real files: a worker of a job whose lease was taken over writes after the takeover,
and what it wrote never becomes visible (issue 25 part 2; docs/reliability.md, Writers)."""

from __future__ import annotations

import time

import pytest
from fencing_scene import NUM_SHARDS, PER_SHARD, open_scene, visible_files, write_part

from s2d.engine.data import commits as commits_module
from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.commits import ShardCommits
from s2d.engine.data.lease import Lease, LeaseLost
from s2d.engine.data.manifest import read_manifest, shard_name
from s2d.engine.data.shard_tasks import stage_shard
from s2d.engine.data.shards import read_committed

pytestmark = pytest.mark.integration


def test_a_ray_worker_of_a_replaced_job_writing_late_never_makes_its_files_visible(tmp_path, ray_session, monkeypatch):
    out = tmp_path / "run"
    go = tmp_path / "go"
    location, spec, plan = open_scene(out)
    stalled = Lease.acquire(out, heartbeat_s=3600, timeout_s=0.5)  # a job that stalls: it never beats

    def late_stage_shard(*args):  # the replaced job's shard task, held on its Ray worker until after the takeover
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return stage_shard(*args)

    monkeypatch.setattr(commits_module, "stage_shard", late_stage_shard)
    old = ShardCommits(location, read_manifest(out), stalled, spec, NUM_SHARDS)
    old.start(ray_session, plan)
    old.add_part(0, PER_SHARD, write_part(location, stalled.fence, 0, "old", "part-a.parquet"))  # task launched
    monkeypatch.undo()

    time.sleep(0.7)
    taker = Lease.acquire(out, heartbeat_s=3600, timeout_s=0.5)
    assert taker.taken_over["owner"] == stalled.owner and taker.epoch == stalled.epoch + 1
    location, spec, plan = open_scene(out)  # the new holder opens the output
    new = ShardCommits(location, read_manifest(out), taker, spec, NUM_SHARDS)
    new.start(ray_session, plan)
    for shard in range(NUM_SHARDS):
        write_part(location, stalled.fence, shard, "old", "part-late.parquet")  # the old pipeline goes on
        new.add_part(shard, PER_SHARD, write_part(location, taker.fence, shard, "new", "part-b.parquet"))
    new.finish()
    committed = [path.read_bytes() for path in sorted((out / "shards").glob("shard-*"))]

    go.touch()  # the old job's worker now writes shard 0's files, after the new holder committed it
    with pytest.raises(LeaseLost, match="lost its lease"):
        old.finish()
    assert sorted((out / "shards").glob(f".shard-00000.parquet.{stalled.fence}-*.staged")), "the late write landed"

    assert [path.read_bytes() for path in sorted((out / "shards").glob("shard-*"))] == committed, "bytes unchanged"
    assert visible_files(out) == {kind: [shard_name(s) for s in range(NUM_SHARDS)] for kind in visible_files(out)}
    answers = read_committed(out, "shards", columns=["answer"]).column("answer").to_pylist()  # each file verified
    assert answers == ["new"] * NUM_SHARDS * PER_SHARD
    assert check_accounting(out).ok
    assert {entry.job for entry in read_manifest(out).shards.values()} == {taker.owner}
    taker.release()
    stalled.release()
