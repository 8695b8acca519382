"""A replica ten times slower than the other does not stall the job (issue 26): Ray Data's pool hands each replica
at most its batches in flight (one block per batch, the generate stage), so the fast replica takes the rest of the
stream; and at the job's tail, the slow replica's batches are re-run by the fast replica's last batches before they
return (generation.straggler_factor, s2d.actors.stragglers), whose copies come back first: the job does not wait
for the slow one.

Real Ray, real vLLM (the packaged model); the slow replica and the job are tests/slow_replica_scene.py's. The job
runs with the slow replica beside the healthy one, with re-issuing and without (generation.straggler_factor=null),
then on the healthy replica alone. `-s` prints the figures; issue 26's bar on the job time (<= 1.2x the healthy
replica alone) is bench/slow_replica.py's, over several pairs: one 3-second job on two cores is too noisy a measure.
"""

from __future__ import annotations

import json

import pytest
import slow_replica_scene
from slow_replica_scene import INPUTS_PER_SHARD, MAX_RATIO, NUM_INPUTS, POOL, slow_replica_class, timed_job

from s2d.engine.data.manifest import read_manifest

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_a_ten_times_slower_replica_does_not_stall_the_job(tmp_path, ray_session, monkeypatch):
    import ray.cloudpickle as cloudpickle  # Ray pickles with its own copy of cloudpickle
    from test_faults import assert_exactly_once

    import s2d.engine.stages.replica_pool

    cloudpickle.register_pickle_by_value(slow_replica_scene)  # Ray's workers cannot import it
    monkeypatch.setattr(s2d.engine.stages.replica_pool, "replica_class", slow_replica_class)
    # The pool first: the healthy replica alone then runs on Ray workers the first job warmed (the stricter order).
    pool = timed_job(ray_session, tmp_path / "pool", POOL, one_slow=True)
    control = timed_job(ray_session, tmp_path / "control", POOL, True, "generation.straggler_factor=null")
    alone = timed_job(ray_session, tmp_path / "alone", 1, one_slow=False)
    ratio, control_ratio = pool["job_s"] / alone["job_s"], control["job_s"] / alone["job_s"]
    figures = {"ratio": round(ratio, 3), "control_ratio": round(control_ratio, 3)}
    print(json.dumps(figures | {"pool": pool, "control": control, "alone": alone}))
    for name, job in (("pool", pool), ("control", control), ("alone", alone)):
        out = tmp_path / name
        assert job["summary_inputs"] == NUM_INPUTS
        assert read_manifest(out).counts.committed_shards == NUM_INPUTS // INPUTS_PER_SHARD
        assert_exactly_once(out, NUM_INPUTS)
    # The fast replica took most of the stream; the slow one's batches at the tail were re-run by the fast one,
    # whose copies came back first, so the job did not wait for them.
    assert pool["batches_fast"] >= 3 * max(pool["batches_slow"], 1), pool["timeline"]
    assert pool["reissued"] >= 1 and pool["won"] >= 1, pool
    # The tail: the slow replica's batches came back with the healthy replica's last ones (its copies), not at their
    # own pace (without re-issue they end seconds after, in `control`).
    slow_end = max(end for slow, _, end in pool["timeline"] if slow)
    healthy_end = max(end for slow, _, end in pool["timeline"] if not slow)
    assert slow_end <= healthy_end + 0.5, pool["timeline"]
    # The bar on the whole job is bench/slow_replica.py's, over several pairs; this one pair's is printed:
    # on two cores, where the slow replica's engine computes beside the healthy one, single pairs of these 3-second
    # jobs spread over 0.85-1.53x, their medians over five pairs 1.03-1.13x (bench/RESULTS.md, 2026-12-07).
    if ratio > MAX_RATIO:
        print(f"issue 26's bar not met here: {ratio:.2f}x > {MAX_RATIO}x the healthy replica alone")
