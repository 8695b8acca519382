import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_rows import BAD, GOOD, catalogue_file

from s2d.engine.core.spec import parse_spec
from s2d.engine.core.tasks import TaskInput
from s2d.engine.data.sources import DataError, Quarantined, iter_inputs, source_fingerprint


def _spec(path, **data):
    columns = data.pop("columns", {"input": "q", "label": "a"})
    return parse_spec(
        {
            "model": "smollm2-135m",
            "task": {"name": data.pop("task", "freeform")},
            "data": {"path": str(path), "columns": columns, **data},
        }
    )


def _items(spec):
    return [item for batch in iter_inputs(spec, batch_rows=7) for item in batch]


def test_every_bad_row_is_quarantined_with_its_reason_and_good_rows_pass(tmp_path):
    path, reasons = catalogue_file(tmp_path / "rows.jsonl")
    items = _items(_spec(path))
    assert len(items) == len(GOOD) + len(BAD), "one item per row, none lost"
    good, bad = items[: len(GOOD)], items[len(GOOD) :]
    assert all(isinstance(item, TaskInput) for item in good)
    assert [item.reason for item in bad] == reasons
    assert len(BAD) >= 20 and len(set(reasons)) >= 12
    assert len({(item.reason, item.detail) for item in bad}) == len(BAD), "each kind says what is wrong with it"
    assert good[1].label == "5" and "{{ 7 * 7 }}" in good[3].question
    ids = [item.input_id for item in items]
    assert len(set(ids)) == len(ids), "every row, bad or duplicate, has its own id"
    duplicate = next(item for item in bad if item.reason == "duplicate")
    assert duplicate.detail == "same input as row 0" and duplicate.source_row == len(GOOD) + 16
    assert all(isinstance(item.raw, str) and len(item.raw) < 300 for item in bad)
    assert all("\x00" not in item.raw for item in bad)


def test_ids_are_content_hashes_so_reordering_keeps_them(tmp_path):
    rows = [{"q": f"question {i}"} for i in range(5)]
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in rows))
    second = tmp_path / "b.jsonl"
    second.write_text("\n".join(json.dumps(r) for r in reversed(rows)))
    ids = lambda path: sorted(i.input_id for i in _items(_spec(path, columns={"input": "q"})))  # noqa: E731
    assert ids(first) == ids(second)
    assert source_fingerprint(_spec(first)) != source_fingerprint(_spec(second))


def test_id_column_is_used_and_must_be_a_scalar(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"id": 7, "q": "a?"}, {"id": None, "q": "b?"}]))
    items = _items(_spec(path, columns={"input": "q", "id": "id"}))
    assert items[0].input_id == "7" and isinstance(items[1], Quarantined) and items[1].reason == "bad_id"


def test_a_bad_row_keeps_the_users_id_when_it_has_a_free_one(tmp_path):
    rows = [
        {"qid": "q1", "q": "fine?"},
        {"qid": "q2", "q": ""},
        {"qid": "q1", "q": ""},
        {"qid": "q3", "q": None},
        {"qid": "q3", "q": "taken by the bad row above?"},
        "not an object",
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = _items(_spec(path, columns={"input": "q", "id": "qid"}))
    assert [item.input_id for item in items[:4]] == ["q1", "q2", items[2].input_id, "q3"]
    assert items[2].input_id not in {"q1", "q2", "q3"} and items[2].reason == "empty", "q1 is a good row's id"
    assert items[4].reason == "duplicate" and items[4].detail == "same id as row 3"
    ids = [item.input_id for item in items]
    assert len(set(ids)) == len(ids) and items[5].reason == "not_an_object"


def test_csv_with_a_ragged_row_and_bad_bytes(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b'q,a\n"Is water wet?",yes\nonly,three,fields\n"bad \xff byte",x\n,empty\n')
    items = _items(_spec(path))
    assert isinstance(items[0], TaskInput) and items[0].label == "yes"
    assert [item.reason for item in items[1:]] == ["malformed_row", "invalid_unicode", "null"]


def test_parquet_folder_and_binary_column(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"q": pa.array([b"first?", b"\xff\xfe"], pa.binary())}), folder / "0.parquet")
    pq.write_table(pa.table({"q": pa.array([b"second?"], pa.binary())}), folder / "1.parquet")
    items = _items(_spec(folder, columns={"input": "q"}))
    assert [getattr(item, "question", None) for item in items] == ["first?", None, "second?"]
    assert items[1].reason == "invalid_utf8"


def test_parquet_without_the_input_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "rows.parquet")
    with pytest.raises(DataError, match="no input column 'q'.*data.columns.input"):
        _items(_spec(tmp_path / "rows.parquet"))


def test_datasets_save_to_disk_layout(tmp_path):
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow stream files listed in state.json."""
    split = tmp_path / "ds" / "train"
    split.mkdir(parents=True)
    table = pa.table({"q": ["one?", "two?"], "a": ["1", "2"]})
    with pa.OSFile(str(split / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (split / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (split / "dataset_info.json").write_text("{}")
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    items = _items(_spec(tmp_path / "ds"))
    assert [(i.question, i.label) for i in items] == [("one?", "1"), ("two?", "2")]
    with pytest.raises(DataError, match="set data.split"):
        _items(_spec(tmp_path / "ds", split="test"))


def test_structured_task_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"q": "Best pet?", "ra": "A cat.", "rb": "A rock."}, {"q": "Best pet?", "ra": "A cat.", "rb": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = _items(_spec(path, task="pairwise_judge", columns={"input": "q", "response_a": "ra", "response_b": "rb"}))
    assert items[0].fields == {"instruction": "Best pet?", "response_a": "A cat.", "response_b": "A rock."}
    assert "Response B: A rock." in items[0].question
    assert isinstance(items[1], Quarantined) and items[1].reason == "empty" and "response_b" in items[1].detail


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _items(_spec(tmp_path / "nope.jsonl"))
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(DataError, match="set data.format"):
        _items(_spec(tmp_path / "rows.txt"))


def test_limit_reads_the_first_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"q{i}?"}) for i in range(10)))
    assert len(_items(_spec(path, limit=3, columns={"input": "q"}))) == 3


def test_eval_reads_labeled_rows_of_eval_path_not_distilled(tmp_path):
    from s2d.engine.data.sources import labeled_eval_inputs

    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"q": f"q{i}?", "a": str(i)}) for i in range(4)))
    held = tmp_path / "eval.jsonl"
    held.write_text(
        "\n".join(
            json.dumps(r) for r in [{"q": "q0?", "a": "0"}, {"q": "new?", "a": "n"}, {"q": "unlabeled?"}, {"q": ""}]
        )
    )
    assert [i.question for i in labeled_eval_inputs(_spec(train, eval_path=str(held)))] == ["new?"]
    with pytest.raises(ValueError, match="data.eval_path"):
        labeled_eval_inputs(_spec(train))
