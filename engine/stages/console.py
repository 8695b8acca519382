"""What a run shows: s2d's own lines and progress bars on the terminal; everything else in a log file.

Ray, vLLM and DeepSpeed write from many places: C++ code in the driver (Ray's core worker), Python loggers,
warnings, and every actor's stdout/stderr, which Ray streams to the driver's `sys.stdout`/`sys.stderr`. A
quiet run points file descriptors 1 and 2, and `sys.stdout`/`sys.stderr`, at `<out>/logs/<command>-<time>.log`
for its duration, so all of that lands in the log whatever its source, and keeps the streams that were there
before (the terminal) for s2d's own lines (`say`, `error`) and bars (`terminal`). `-v` leaves everything on
the terminal, as the libraries print it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_terminal: dict[str, TextIO] = {}  # "out", "err": the streams s2d writes to while a quiet run redirects the rest


def say(text: str) -> None:
    """One of s2d's own result lines (standard output)."""
    stream = _terminal.get("out", sys.stdout)
    print(text, file=stream, flush=True)


def error(text: str) -> None:
    """An s2d error or notice (standard error)."""
    print(text, file=terminal(), flush=True)


def terminal() -> TextIO:
    """The terminal's error stream, for progress bars."""
    return _terminal.get("err", sys.stderr)


def log_path_for(out_dir: Path | None, command: str) -> Path:
    """Where a run's log goes: `<out>/logs/` for a local output, else a temporary folder."""
    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if out_dir is not None:
        try:
            (out_dir / "logs").mkdir(parents=True, exist_ok=True)
            return out_dir / "logs" / name
        except OSError:
            pass  # an unwritable out: the run itself reports that, in one line; its log goes elsewhere
    return Path(tempfile.mkdtemp(prefix="s2d-logs-")) / name


def _terminal_copy(stream: TextIO, fd: int) -> TextIO:
    """A stream that still reaches where `stream` wrote once `fd` is redirected: a duplicate of the fd when
    `stream` writes to it (a terminal, a pipe), else `stream` itself (a test's capture object)."""
    try:
        writes_to_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        writes_to_fd = False
    if not writes_to_fd:
        return stream
    return io.TextIOWrapper(
        os.fdopen(os.dup(fd), "wb", buffering=0),
        encoding=getattr(stream, "encoding", "utf-8"),
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )


@contextlib.contextmanager
def quiet(log_path: Path) -> Iterator[Path]:
    """Send everything but s2d's own output to `log_path` while the block runs (module docstring)."""
    if _terminal:  # already quiet (a nested stage): one log per run
        yield log_path
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {"out": sys.stdout, "err": sys.stderr}
    saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    _terminal.update(out=_terminal_copy(sys.stdout, 1), err=_terminal_copy(sys.stderr, 2))
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    try:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        sys.stdout = sys.stderr = log
        yield log_path
    except BaseException:
        # The whole story goes to the log; the caller prints the one-line cause on the terminal.
        traceback.print_exc(file=log)
        raise
    finally:
        log.flush()
        sys.stdout, sys.stderr = saved["out"], saved["err"]
        for fd, copy in saved_fds.items():
            os.dup2(copy, fd)
            os.close(copy)
        for name, stream in list(_terminal.items()):
            if stream is not saved[name]:
                stream.flush()
                stream.close()
        _terminal.clear()
        log.close()
