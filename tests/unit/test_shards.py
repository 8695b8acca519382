import json

import pyarrow.parquet as pq
import pytest

from engine.shards import OutputConflict, ShardWriter, num_shards_for, read_committed, shard_of


def _row(input_id, shard, status="accepted"):
    return {"input_id": input_id, "shard_id": shard, "prompt": f"p{input_id}", "status": status,
            "answer": "abcd" if status == "accepted" else None, "votes": 5, "num_samples": 8, "agreement": 0.625,
            "reason": None if status == "accepted" else "tie", "detail": "", "answer_counts": "{}",
            "method": "rar2", "model": "m", "system2_tokens": 12.0}


def test_partitioning_is_stable_and_covers_every_shard():
    ids = [f"{i:020x}" for i in range(2000)]
    assert [shard_of(i, 7) for i in ids] == [shard_of(i, 7) for i in ids]
    assert set(shard_of(i, 7) for i in ids) == set(range(7))
    assert num_shards_for(0, 10) == 1 and num_shards_for(10, 10) == 1 and num_shards_for(11, 10) == 2


def test_shard_commits_when_its_last_input_arrives(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 2, 1: 1})
    writer.add([_row("a", 0)])
    assert not (tmp_path / "shards" / "shard-00000.parquet").exists()
    writer.add([_row("b", 0, "rejected"), _row("c", 1)])
    manifest = writer.finish()
    assert manifest["counts"] == {"accepted": 2, "rejected": 1, "committed_shards": 2}
    assert pq.read_table(tmp_path / "shards" / "shard-00000.parquet").column("input_id").to_pylist() == ["a"]
    assert pq.read_table(tmp_path / "rejected" / "shard-00000.parquet").column("reason").to_pylist() == ["tie"]
    assert json.loads((tmp_path / "manifest.json").read_text())["fingerprint"] == "fp"
    assert sorted(read_committed(tmp_path).column("input_id").to_pylist()) == ["a", "c"]


def test_empty_shard_is_committed_and_reopen_skips_committed(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 0})
    assert writer.committed_shards == {1}
    writer.add([_row("a", 0)])
    writer.finish()
    again = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 0})
    assert again.committed_shards == {0, 1} and again.expected == {}


def test_unfinished_shard_fails_finish_and_duplicates_are_refused(tmp_path):
    writer = ShardWriter.open(tmp_path, 1, "fp", {0: 2})
    writer.add([_row("a", 0)])
    with pytest.raises(RuntimeError, match="never completed"):
        writer.finish()
    with pytest.raises(RuntimeError, match="duplicate"):
        writer.add([_row("a", 0)])
    with pytest.raises(RuntimeError, match="not being produced"):
        ShardWriter.open(tmp_path / "x", 1, "fp", {0: 1}).add([_row("z", 5)])


def test_other_spec_is_refused_unless_forced(tmp_path):
    ShardWriter.open(tmp_path, 1, "fp1", {0: 1}).add([_row("a", 0)])
    with pytest.raises(OutputConflict, match="--force"):
        ShardWriter.open(tmp_path, 1, "fp2", {0: 1})
    forced = ShardWriter.open(tmp_path, 1, "fp2", {0: 1}, force=True)
    assert forced.committed_shards == set() and not list((tmp_path / "shards").iterdir())
