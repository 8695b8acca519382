import json

import pyarrow.parquet as pq
import pytest

from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.manifest import Counts, OutputConflict, read_manifest
from s2d.engine.data.shards import ShardWriter, curated_table, num_shards_for, read_committed, shard_of
from s2d.engine.data.storage import OutputError, OutputLocation


def _row(input_id, shard, status="accepted"):
    return {
        "input_id": input_id,
        "shard_id": shard,
        "prompt": f"p{input_id}",
        "status": status,
        "answer": "abcd" if status == "accepted" else None,
        "votes": 5,
        "num_samples": 8,
        "agreement": 0.625,
        "reason": {"accepted": None, "rejected": "tie", "quarantined": "empty"}[status],
        "detail": "",
        "answer_counts": [],
        "criterion": "majority",
        "method": "rar2",
        "model": "m",
        "system2_tokens": 12.0,
    }


def test_partitioning_is_stable_and_covers_every_shard():
    ids = [f"{i:020x}" for i in range(2000)]
    assert [shard_of(i, 7) for i in ids] == [shard_of(i, 7) for i in ids]
    assert set(shard_of(i, 7) for i in ids) == set(range(7))
    assert num_shards_for(0, 10) == 1 and num_shards_for(10, 10) == 1 and num_shards_for(11, 10) == 2


def test_shard_commits_its_three_tables_when_its_last_input_arrives(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 3, 1: 1})
    writer.add(curated_table([_row("a", 0)]))
    assert not (tmp_path / "shards" / "shard-00000.parquet").exists()
    writer.add(curated_table([_row("b", 0, "rejected"), _row("c", 1), _row("q", 0, "quarantined")]))
    manifest = writer.finish()
    assert manifest.counts == Counts(accepted=2, rejected=1, quarantined=1, committed_shards=2)
    assert manifest.num_inputs == 4
    assert pq.read_table(tmp_path / "shards" / "shard-00000.parquet").column("input_id").to_pylist() == ["a"]
    assert pq.read_table(tmp_path / "rejected" / "shard-00000.parquet").column("reason").to_pylist() == ["tie"]
    assert pq.read_table(tmp_path / "quarantine" / "shard-00000.parquet").column("reason").to_pylist() == ["empty"]
    assert json.loads((tmp_path / "manifest.json").read_text())["fingerprint"] == "fp"
    assert sorted(read_committed(tmp_path).column("input_id").to_pylist()) == ["a", "c"]
    assert check_accounting(tmp_path).ok


def test_empty_shard_is_committed_and_reopen_skips_committed(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 0})
    assert writer.committed_shards == {1}
    writer.add(curated_table([_row("a", 0)]))
    writer.finish()
    again = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 0})
    assert again.committed_shards == {0, 1} and again.expected == {}


def test_a_retried_row_is_kept_once_and_strays_are_refused(tmp_path):
    writer = ShardWriter.open(tmp_path, 1, "fp", {0: 2})
    writer.add(curated_table([_row("a", 0)]))
    writer.add(curated_table([_row("a", 0, "rejected")]))  # the same input again, from a retried batch
    with pytest.raises(RuntimeError, match="never completed"):
        writer.finish()
    writer.add(curated_table([_row("b", 0)]))
    assert writer.finish().counts.accepted == 2 and writer.duplicates_dropped == 1
    with pytest.raises(RuntimeError, match="not being produced"):
        ShardWriter.open(tmp_path / "x", 1, "fp", {0: 1}).add(curated_table([_row("z", 5)]))


def test_a_batch_retried_after_its_shard_committed_is_dropped(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 2, 1: 1})
    batch = curated_table([_row("a", 0), _row("b", 0), _row("b", 0)])  # a repeat within the batch too
    writer.add(batch)
    assert writer.committed_shards == {0} and writer.duplicates_dropped == 1
    writer.add(batch)
    writer.add(curated_table([_row("c", 1)]))
    writer.finish()
    assert writer.duplicates_dropped == 4 and check_accounting(tmp_path).ok
    assert read_committed(tmp_path).column("input_id").to_pylist() == ["a", "b", "c"]


def test_more_inputs_than_the_shard_expects_is_refused(tmp_path):
    writer = ShardWriter.open(tmp_path, 1, "fp", {0: 2})
    with pytest.raises(RuntimeError, match="more inputs than expected"):
        writer.add(curated_table([_row("a", 0), _row("b", 0), _row("c", 0)]))


def test_one_batch_over_many_shards_and_answer_counts_kept(tmp_path):
    rows = [
        {**_row(f"i{index}", index % 7, "rejected"), "answer_counts": [{"answer": "x", "votes": index}]}
        for index in range(70)
    ]
    writer = ShardWriter.open(tmp_path, 7, "fp", {shard: 10 for shard in range(7)})
    writer.add(curated_table(rows[::-1]))
    assert writer.finish().counts.rejected == 70
    rejected = read_committed(tmp_path, "rejected")
    assert sorted(rejected.column("input_id").to_pylist()) == sorted(row["input_id"] for row in rows)
    assert pq.read_table(tmp_path / "rejected" / "shard-00003.parquet").column("answer_counts").to_pylist()[0] == [
        {"answer": "x", "votes": 66}
    ]


def test_rows_of_incomplete_shards_spill_to_staging_and_commit_whole(tmp_path):
    writer = ShardWriter.open(tmp_path, 3, "fp", {0: 4, 1: 4, 2: 1}, max_buffered_rows=3)
    writer.add(curated_table([_row(f"a{i}", 0) for i in range(3)] + [_row("b0", 1)]))
    assert list((tmp_path / ".staging").rglob("*.parquet")), "buffered rows over the limit go to disk"
    writer.add(curated_table([_row(f"b{i}", 1, "rejected") for i in range(1, 4)] + [_row("a3", 0), _row("c0", 2)]))
    writer.finish()
    assert not (tmp_path / ".staging").exists()
    assert sorted(read_committed(tmp_path).column("input_id").to_pylist()) == ["a0", "a1", "a2", "a3", "b0", "c0"]
    assert len(read_committed(tmp_path, "rejected")) == 3


def test_reopen_discards_what_an_interrupted_commit_left(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 1})
    writer.add(curated_table([_row("a", 0)]))
    # A crash between publishing shard 1's files and rewriting the manifest leaves files no commit owns.
    (tmp_path / "shards" / "shard-00001.parquet").write_bytes(b"half")
    (tmp_path / "shards" / ".shard-00001.parquet.1234.tmp").write_bytes(b"half")
    (tmp_path / ".staging" / "shard-00001").mkdir(parents=True)
    again = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 1})
    assert again.committed_shards == {0}
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-00000.parquet"]
    assert not (tmp_path / ".staging").exists()


def test_other_spec_is_refused_unless_forced(tmp_path):
    ShardWriter.open(tmp_path, 1, "fp1", {0: 1}).add(curated_table([_row("a", 0)]))
    with pytest.raises(OutputConflict, match="--force"):
        ShardWriter.open(tmp_path, 1, "fp2", {0: 1})
    forced = ShardWriter.open(tmp_path, 1, "fp2", {0: 1}, force=True)
    assert forced.committed_shards == set() and not list((tmp_path / "shards").iterdir())


def test_a_filesystem_uri_works_like_a_path(tmp_path):
    out = f"file://{tmp_path}/run"
    writer = ShardWriter.open(out, 1, "fp", {0: 2})
    writer.add(curated_table([_row("a", 0), _row("b", 0, "quarantined")]))
    writer.finish()
    assert read_manifest(out).counts.quarantined == 1
    assert read_committed(out).column("input_id").to_pylist() == ["a"]
    assert check_accounting(out).ok and (tmp_path / "run" / "quarantine" / "shard-00000.parquet").is_file()


def test_accounting_finds_an_input_in_two_places(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 1})
    writer.add(
        curated_table([_row("a", 0), _row("a", 1, "rejected")])
    )  # one id under two shards: a broken partitioning
    report = check_accounting(tmp_path)
    assert not report.ok and report.duplicated_ids == ["a"]
    assert "appear more than once" in report.problems()[0]


def test_unwritable_output_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot write .*file/run"):
        ShardWriter.open(blocker / "run", 1, "fp", {0: 1})
    location = OutputLocation.of(tmp_path)
    with pytest.raises(OutputError, match="committed shards are intact"):
        location.write_bytes_atomic(b"x", "missing-folder", "file.json")
    assert [p.name for p in tmp_path.iterdir()] == ["file"], "no temporary file is left behind"
