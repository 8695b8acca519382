"""How many rows each curation task takes (s2d.engine.stages.generate.curation_batch_rows)."""

from s2d.engine.stages.generate import MAX_CURATION_ROWS, curation_batch_rows


def test_a_large_job_curates_eight_replica_batches_per_task():
    assert curation_batch_rows(1024, 1_000_000, queued_rows_cap=8192) == 8192 == MAX_CURATION_ROWS


def test_a_small_job_curates_each_batch_as_it_comes():
    assert curation_batch_rows(64, 288, queued_rows_cap=512) == 64  # the demo
    assert curation_batch_rows(4, 16, queued_rows_cap=16) == 4  # a test's tiny job


def test_whole_replica_batches_never_more_than_may_wait_between_stages():
    assert curation_batch_rows(1000, 1_000_000, queued_rows_cap=8192) == 8000
    assert curation_batch_rows(1024, 1_000_000, queued_rows_cap=4096) == 4096
    assert curation_batch_rows(3000, 100_000, queued_rows_cap=1000) == 3000  # one batch at least
    assert curation_batch_rows(1024, 100_000, queued_rows_cap=8192) == 3072  # a 32nd of the job
