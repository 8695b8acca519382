"""A full disk or an unwritable `out`: one clear line, and what was committed stays readable."""

from __future__ import annotations

import subprocess

import pytest

from s2d.engine.cli import main
from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.shards import ShardWriter, curated_table, read_committed
from s2d.engine.data.storage import OutputError


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB tmpfs (needs root, as in this project's CI containers); skipped where mounting is refused."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _row(i, shard):
    return {
        "input_id": f"id{i}",
        "shard_id": shard,
        "status": "accepted",
        "prompt": "p" * 2000 + str(i),
        "answer": "a",
        "votes": 1,
        "num_samples": 1,
        "agreement": 1.0,
        "method": "m",
        "model": "m",
    }


def test_disk_full_mid_job_is_one_error_and_committed_shards_survive(small_disk):
    out = small_disk / "run"
    writer = ShardWriter.open(out, 40, "fp", {shard: 1 for shard in range(40)})
    committed = 0
    with pytest.raises(OutputError) as caught:
        for shard in range(40):
            # Incompressible prompts, so the 256 KiB fill up within the 40 shards.
            writer.add(curated_table([{**_row(shard, shard), "prompt": __import__("os").urandom(6000).hex()}]))
            committed = len(writer.committed_shards)
    message = str(caught.value)
    assert "no space left on device" in message and "\n" not in message and "committed shards are intact" in message
    assert 0 < committed < 40
    assert len(read_committed(out)) == committed  # every committed shard is still whole and readable
    assert not [p for p in out.rglob(".*.tmp")], "no temporary file is left behind"
    report = check_accounting(out)
    assert report.committed_shards == committed and not report.duplicated_ids


def test_unwritable_out_fails_the_cli_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["generate", "configs/demo.yaml", f"out={blocker}/run", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("s2d: error: cannot write")
