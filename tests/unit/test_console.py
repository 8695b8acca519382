"""The quiet console: library output of every kind goes to the log; s2d's own lines reach the terminal."""

import subprocess
import sys
import textwrap
from pathlib import Path

from s2d.engine.cli import main

ROOT = Path(__file__).parents[2]


def test_native_python_and_child_output_go_to_the_log_and_s2d_lines_to_the_terminal(tmp_path):
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys, warnings
        from s2d.engine.stages.console import error, quiet, say, terminal
        with quiet({str(tmp_path / "run.log")!r}):
            os.write(2, b"[E core_worker.cc] native noise\\n")
            print("library print")
            logging.getLogger("vllm").error("ERROR a library log line")
            warnings.warn("a library warning")
            subprocess.run(["echo", "child process output"])
            say("s2d: result line")
            terminal().write("progress bar\\n")
            error("s2d: notice")
        print("after the run")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "s2d: result line\nafter the run\n"
    assert done.stderr == "progress bar\ns2d: notice\n"
    log = (tmp_path / "run.log").read_text()
    for noise in (
        "native noise",
        "library print",
        "ERROR a library log line",
        "a library warning",
        "child process output",
    ):
        assert noise in log


def test_a_failing_run_ends_with_its_cause_and_the_log_path(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "generate",
            str(ROOT / "configs" / "demo.yaml"),
            f"out={out}",
            f"data.path={tmp_path / 'none.jsonl'}",
            "task.name=freeform",
            "method.name=system1",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("s2d: error: data.path") and f"(log: {out / 'logs'}" in last
    assert "Traceback" not in captured.err + captured.out
    log = next((out / "logs").glob("generate-*.log")).read_text()
    assert "Traceback" in log, "the whole story is in the log"
