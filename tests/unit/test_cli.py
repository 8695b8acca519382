"""The CLI's contract for bad job files: exit code 2 and one line on stderr, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "s2d.engine.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "content, overrides, expected",
    [
        ("model: smollm2-135m\ntaks: {}\n", [], "unknown key 'taks'"),
        ("model: smollm2-135m\n", ["sampling.n=eight"], "sampling.n"),
        ("out: runs/x\n", [], "missing required key 'model'"),
        ("model: ./no/such/folder\n", [], "not found"),
        ("model: [a\n", [], "not valid YAML"),
    ],
)
def test_bad_job_file_exits_2_with_one_line(tmp_path, content, overrides, expected):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    result = run_cli("generate", str(job), *overrides)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr


def test_missing_job_file_exits_2(tmp_path):
    result = run_cli("run", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "cannot read job file" in result.stderr


def test_methods_lists_each_method_with_a_line():
    result = run_cli("methods")
    assert result.returncode == 0
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"system1", "rar2"} <= names


def test_help_names_every_stage():
    result = run_cli("--help")
    for stage in ("run", "generate", "train", "eval", "methods"):
        assert stage in result.stdout


def test_overrides_may_follow_options():
    from s2d.engine.cli import parse_args

    args = parse_args(["generate", "job.yaml", "a=1", "--no-progress", "b=2"])
    assert args.overrides == ["a=1", "b=2"] and args.no_progress
    with pytest.raises(SystemExit):
        parse_args(["generate", "job.yaml", "--no-progress", "--bogus"])
    with pytest.raises(SystemExit):
        parse_args(["methods", "a=1"])


def test_status_reports_progress_and_the_exactly_once_check(tmp_path, capsys):
    from s2d.engine.cli import main
    from s2d.engine.data.shards import ShardWriter, curated_table

    row = {"input_id": "a", "shard_id": 0, "status": "accepted", "prompt": "p", "answer": "x"}
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 1, 1: 1})
    writer.add(curated_table([row]))
    assert main(["status", str(tmp_path)]) == 3
    assert "1 / 2 shards committed" in capsys.readouterr().out
    writer.add(curated_table([{**row, "input_id": "b", "shard_id": 1, "status": "quarantined", "reason": "empty"}]))
    assert main(["status", str(tmp_path)]) == 0
    assert "1 accepted, 0 rejected, 1 quarantined" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nothing")]) == 1


def test_sigterm_stops_a_run_the_way_ctrl_c_does_with_exit_143_and_one_line(tmp_path, monkeypatch, capsys):
    """What a scheduler's SIGTERM does to a running job, without an engine (test_no_orphans runs it with one)."""
    import os
    import signal
    import time

    from s2d.engine import cli

    def stages_then_sigterm(args, spec, log):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises Terminated at once, in the middle of the run
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(cli, "_run_stages", stages_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["generate", "-v", str(ROOT / "configs" / "demo.yaml"), f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 143
    assert err[-1] == "s2d: terminated (SIGTERM); committed shards are kept, rerun the same command to resume"
    assert signal.getsignal(signal.SIGTERM) is before, "the run puts the previous handler back"
