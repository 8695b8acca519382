"""What is read is verified: every committed file against its checksum and row count in the manifest (`s2d status`,
and every reader: export, train, inspect), and no manifest entry may send a reader outside the output. Real
outputs written by the shard writer, altered on disk the ways a file goes wrong."""

import hashlib
import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_card import demo_sized_output

from s2d.engine.cli import main
from s2d.engine.data.manifest import read_manifest
from s2d.engine.data.ownership import MANIFEST, ForeignOutput
from s2d.engine.data.shards import read_committed
from s2d.engine.data.storage import AlteredFile
from s2d.training.trainer import read_accepted_rows, train_model

TABLES = ("shards", "rejected", "quarantine", "samples")


def _accepted_file(out):
    """The committed accepted file holding the most rows (the demo output's shards hold a few each)."""
    manifest = read_manifest(out)
    entry = max(manifest.shards.values(), key=lambda entry: entry.accepted)
    assert entry.accepted > 0
    return out / "shards" / entry.file


def _rewrite_answers(path, answer="zzz"):
    """The attack of the issue: every answer replaced, the row count and the schema kept."""
    table = pq.read_table(path)
    column = table.schema.get_field_index("answer")
    rewritten = table.set_column(column, "answer", pa.array([answer] * table.num_rows, pa.string()))
    pq.write_table(rewritten, path)
    return table.num_rows


def _drop_checksums(out):
    """The manifest as the previous s2d's driver-side writer left it: no checksums."""
    manifest = json.loads((out / MANIFEST).read_text())
    for entry in manifest["shards"].values():
        entry.pop("checksums", None)
    (out / MANIFEST).write_text(json.dumps(manifest))


def _status(out, capsys):
    code = main(["status", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_committed_file_has_the_checksum_of_its_bytes(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    for shard, entry in read_manifest(out).shards.items():
        assert sorted(entry.checksums) == sorted(TABLES), f"shard {shard}: a checksum per table file"
        for kind in TABLES:
            digest = hashlib.sha256((out / kind / entry.file).read_bytes()).hexdigest()[:16]
            assert entry.checksums[kind] == digest
    code, text, err = _status(out, capsys)
    assert code == 0 and not err
    assert "verified: every committed file is as committed (its checksum and row count" in text
    assert "note:" not in text


def test_a_rewritten_shard_fails_status_export_and_train_naming_it(tmp_path, capsys):
    out = tmp_path / "demo"
    spec = demo_sized_output(out)
    altered = _accepted_file(out)
    _rewrite_answers(altered)

    code, text, err = _status(out, capsys)
    assert code == 1 and "exactly once" not in text
    assert err.splitlines() == [err.splitlines()[0]] and str(altered) in err and "checksum" in err
    assert "Traceback" not in err

    to = tmp_path / "pairs.jsonl"
    assert main(["export", str(out), "--to", str(to)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(altered) in err and "checksum" in err
    assert not to.exists() and not list(tmp_path.glob(".pairs.jsonl*")), "nothing written"

    with pytest.raises(AlteredFile, match=str(altered)):
        read_accepted_rows(out)
    with pytest.raises(AlteredFile, match=str(altered)):
        train_model(spec)  # before Ray or a model is touched
    assert main(["inspect", str(out), "--accepted"]) == 1
    assert str(altered) in capsys.readouterr().err


def test_train_fails_with_one_line_on_an_altered_shard(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    altered = _accepted_file(out)
    _rewrite_answers(altered)
    job = tmp_path / "job.yaml"
    job.write_text(f"model: org/not-loaded\nout: {out}\n")
    assert main(["train", str(job), "-v"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(altered) in err and "Traceback" not in err


def test_a_truncated_file_fails_status_and_reads(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    entry = read_manifest(out).shards[1]
    truncated = out / "rejected" / entry.file
    truncated.write_bytes(truncated.read_bytes()[:-100])
    code, _, err = _status(out, capsys)
    assert code == 1 and err.count("s2d: error:") == 1 and str(truncated) in err
    with pytest.raises(AlteredFile, match=str(truncated)):
        read_committed(out, "rejected")
    _drop_checksums(out)  # without a checksum, the file still does not read as Parquet
    code, _, err = _status(out, capsys)
    assert code == 1 and str(truncated) in err and "not a readable Parquet file" in err


def test_a_swapped_file_fails_status_naming_it(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    manifest = read_manifest(out)
    first, second = manifest.shards[0], manifest.shards[1]
    shutil.copyfile(out / "samples" / first.file, out / "samples" / second.file)
    code, _, err = _status(out, capsys)
    assert code == 1 and len(err.splitlines()) == 1 and str(out / "samples" / second.file) in err
    with pytest.raises(AlteredFile, match="samples/shard-00001.parquet"):
        read_committed(out, "samples")
    assert read_committed(out, "samples", shards=[0]).num_rows == first.samples, "the other shards still read"


def test_a_missing_file_and_every_bad_file_get_one_line_each(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    manifest = read_manifest(out)
    missing = out / "quarantine" / manifest.shards[0].file
    missing.unlink()
    altered = _accepted_file(out)
    _rewrite_answers(altered)
    code, text, err = _status(out, capsys)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2 and all(line.startswith("s2d: error: ") for line in lines)
    assert any(str(missing) in line and "missing" in line for line in lines)
    assert any(str(altered) in line for line in lines)
    assert text.splitlines()[1:] == [], "the bad files' lines say it all: no second line for their rows"


@pytest.mark.parametrize(
    ("shard", "file"),
    [
        ("1", "../../../etc/passwd"),
        ("1", "/tmp/shard-00001.parquet"),
        ("1", "shard-00000.parquet"),  # another shard's file
        ("1", "sub/shard-00001.parquet"),
        ("7", "shard-00007.parquet"),  # not one of the output's shards
    ],
)
def test_a_manifest_entry_naming_another_file_is_refused_with_one_line(tmp_path, capsys, shard, file):
    out = tmp_path / "demo"
    demo_sized_output(out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"][shard] = manifest["shards"].pop("1") | {"file": file}
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ForeignOutput) as refused:
        read_manifest(out)
    assert "\n" not in str(refused.value) and str(out / MANIFEST) in str(refused.value)
    code, _, err = _status(out, capsys)
    assert code == 1 and len(err.splitlines()) == 1 and str(out / MANIFEST) in err
    assert main(["export", str(out), "--to", str(tmp_path / "pairs.jsonl")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not an s2d manifest" in err
    assert not (tmp_path / "pairs.jsonl").exists()


def test_an_old_manifest_without_checksums_verifies_by_row_counts_and_says_so(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    _drop_checksums(out)
    code, text, err = _status(out, capsys)
    assert code == 0 and not err
    assert "note: 12 committed files have no checksum in manifest.json" in text, "3 shards x 4 tables"
    assert "verified: every committed file is as committed (its row count, and checksum where recorded" in text
    assert len(read_committed(out)) == 4 and len(read_accepted_rows(out)) == 4

    short = _accepted_file(out)  # a row dropped: the count no longer matches the manifest's
    table = pq.read_table(short)
    pq.write_table(table.filter(pc.not_equal(table.column("input_id"), table.column("input_id")[0])), short)
    code, _, err = _status(out, capsys)
    assert code == 1 and str(short) in err and f"{table.num_rows - 1} rows, but {table.num_rows} committed" in err
    with pytest.raises(AlteredFile, match="rows, but"):
        read_accepted_rows(out)


def test_the_card_and_an_upload_leave_the_private_state_out(tmp_path):
    """`load_dataset(<out>)` reads the committed shard files only, and the card's upload command picks the card, the
    manifest and those files, whatever else the output holds (logs, the lease, the marker, the job file...)."""
    import datetime

    import yaml
    from huggingface_hub.utils import filter_repo_objects

    from s2d.engine.stages.card import write_card

    out = tmp_path / "demo"
    spec = demo_sized_output(out)
    private_files = ("logs/generate-20260101-000000.log", ".lease.json", "job.yaml", "metrics.json", "eval/x.json")
    for private in private_files:
        (out / private).parent.mkdir(parents=True, exist_ok=True)
        (out / private).write_text("{}")
    (out / "shards" / ".shard-00000.parquet.0123abcd.tmp").write_bytes(b"half a file")
    pq.write_table(pa.table({"mine": [1]}), out / "shards" / "notes.parquet")  # a user's file in a table folder
    write_card(spec, when=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
    text = (out / "README.md").read_text()

    header = yaml.safe_load(text.split("---\n")[1])
    paths = [files["path"] for config in header["configs"] for files in config["data_files"]]
    assert paths == [f"{kind}/shard-*.parquet" for kind in TABLES]
    files = text.split("## Files")[1]
    for private in ("`logs/`", "`.lease.json`", "`.s2d-output.json`", "`job.yaml`", "`metrics.json`", "`.parts/`"):
        assert private in files, f"the card says {private} is private"
    command = files.split("```")[1]
    include = [part.split('"')[1] for part in command.split("--include ")[1:]]
    everything = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    uploaded = sorted(filter_repo_objects(everything, allow_patterns=include))  # what `hf upload --include` sends
    committed = [f"{kind}/{entry.file}" for entry in read_manifest(out).shards.values() for kind in TABLES]
    assert uploaded == sorted(["README.md", MANIFEST, *committed])

    datasets = pytest.importorskip("datasets")
    train = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(train) == 4 and "mine" not in train.column_names
