"""s2d writes only where it may: a new or empty folder, or its own output. A folder of the user's is refused with one
line and left byte for byte as it was; within its own output s2d deletes only files whose names it gives."""

import hashlib
import json
import threading
from pathlib import Path

import pytest

from s2d.engine.cli import main
from s2d.engine.data.manifest import read_manifest
from s2d.engine.data.ownership import FORMAT_VERSION, MARKER, ForeignOutput, claim_output, is_owned_name
from s2d.engine.data.shards import ShardWriter, curated_table

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` (folders too) with its bytes' hash: what "left untouched" means."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def users_folder(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "shards").mkdir(parents=True)
    (results / "samples").mkdir()
    (results / "shards" / "results.csv").write_text("id,score\n1,0.5\n")
    (results / "samples" / "notes.txt").write_text("my notes")
    (results / "shards" / "shard-00000.parquet").write_bytes(b"not s2d's, though named like it")
    return results


@pytest.mark.parametrize("command", ["generate", "run", "train", "eval"])
def test_a_users_folder_is_refused_with_one_line_and_left_as_it_was(tmp_path, capsys, command):
    results = users_folder(tmp_path)
    before = snapshot(results)
    code = main([command, DEMO, f"out={results}", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("s2d: error: out=") and "not an s2d output" in err
    assert snapshot(results) == before  # nothing written (no log, no job.yaml, no marker), nothing deleted


def test_an_empty_out_is_refused(capsys):
    assert main(["generate", DEMO, "out=", "--no-progress"]) == 2
    assert "out is empty" in capsys.readouterr().err


def test_a_file_as_out_is_refused(tmp_path):
    target = tmp_path / "data.csv"
    target.write_text("a,b\n")
    with pytest.raises(ForeignOutput, match="is a file"):
        claim_output(target)
    assert target.read_text() == "a,b\n"


def test_train_and_eval_need_an_output_that_exists(tmp_path, capsys):
    assert main(["train", DEMO, f"out={tmp_path / 'missing'}", "--no-progress"]) == 2
    assert "holds no s2d output" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_a_new_or_empty_folder_is_claimed_and_stays_claimed(tmp_path):
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        claim_output(out)
        assert json.loads((out / MARKER).read_text()) == {"format": "s2d-output", "version": FORMAT_VERSION}
        (out / "logs").mkdir()  # an output with s2d's files in it is still s2d's
        claim_output(out)


def test_a_folder_another_job_is_claiming_is_not_taken_for_the_users(tmp_path):
    """Two jobs started together on one new `out`: the second may look while the first's marker is being written
    (only its temporary name there) or just after (marker and lease file); neither is a folder of the user's."""
    (tmp_path / "..s2d-output.json.0123abcd.tmp").write_text("{")
    claim_output(tmp_path)
    assert json.loads((tmp_path / MARKER).read_text())["format"] == "s2d-output"
    (tmp_path / "..s2d-output.json.0123abcd.tmp").unlink()

    for round_ in range(30):  # real threads racing: each claim succeeds, whichever order the files appear in
        out = tmp_path / f"race{round_}"
        errors: list[BaseException] = []

        def claim_then_write(out=out, errors=errors):
            try:
                claim_output(out)
                (out / f"lease-{threading.get_ident()}").write_text("x")  # what the winner writes next
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=claim_then_write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors


def test_an_output_of_a_newer_s2d_is_refused(tmp_path):
    (tmp_path / MARKER).write_text(json.dumps({"format": "s2d-output", "version": FORMAT_VERSION + 1}))
    with pytest.raises(ForeignOutput, match="newer s2d"):
        claim_output(tmp_path)


def _writer(out, expected=None):
    return ShardWriter.open(out, 2, "fp", expected or {0: 1, 1: 1})


def _row(input_id, shard):
    return {"input_id": input_id, "shard_id": shard, "status": "accepted", "prompt": "p", "answer": "x"}


def test_an_output_from_before_the_marker_resumes(tmp_path):
    writer = _writer(tmp_path)
    writer.add(curated_table([_row("a", 0)]))
    (tmp_path / MARKER).unlink()  # as the previous version wrote it: a manifest, no marker, no format version
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["format_version"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(tmp_path).shards  # format 0 reads
    writer = _writer(tmp_path)  # ... and resumes: shard 0 stays committed
    writer.add(curated_table([_row("b", 1)]))
    assert set(read_manifest(tmp_path).shards) == {0, 1}
    assert (tmp_path / MARKER).exists() and read_manifest(tmp_path).format_version == FORMAT_VERSION


def test_resume_deletes_only_names_s2d_gives(tmp_path):
    _writer(tmp_path).add(curated_table([_row("a", 0)]))
    shards = tmp_path / "shards"
    (shards / "shard-00001.parquet").write_bytes(b"an uncommitted shard of an interrupted commit")
    (shards / ".shard-00001.parquet.0123abcd.tmp").write_bytes(b"a temporary file")
    (shards / "README.txt").write_text("the user's own note, in s2d's folder")
    _writer(tmp_path)
    assert sorted(path.name for path in shards.iterdir()) == ["README.txt", "shard-00000.parquet"]


def test_owned_names():
    assert is_owned_name("shard-00042.parquet") and is_owned_name(".shard-00042.parquet.0a1b2c3d.tmp")
    bad = ("results.csv", "shard-42.parquet", "shard-00042.parquet.bak", ".hidden", "notes.txt", ".shard-00042.parquet")
    for name in bad:
        assert not is_owned_name(name)
