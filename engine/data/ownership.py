"""Which folders s2d writes into: a new or empty one, or its own output, never a folder of the user's.

An s2d output carries a marker file, written first when s2d claims a new or empty folder: its format version,
which readers check (an output written by a newer s2d is refused, not misread). An output written before the
marker existed (a manifest.json of s2d's shape, format 0) is adopted: its layout is the same. Anything else that
is not empty is refused with one line, before anything is written or deleted there. Within an output s2d
deletes only what its own names say it wrote (`is_owned_name`; beside model/ and eval/, `is_swap_folder_name`).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import Any

import pyarrow.fs as pafs

from s2d.engine.core.spec import JobSpec, dump_spec
from s2d.engine.data.storage import OutputLocation

MARKER = ".s2d-output.json"
FORMAT = "s2d-output"
FORMAT_VERSION = 1  # of the output's layout (marker, manifest, tables); readers refuse a newer one
MANIFEST = "manifest.json"
JOB_FILE = "job.yaml"  # the resolved job the output was last run with
PILOT = "pilot"  # <out>/pilot/: what `s2d pilot` writes (its bounded run, report.md, metrics.json), beside the job
PILOT_NAMES = frozenset({"run", "report.md", "metrics.json"})
# File names s2d writes in a table folder: committed shards, a worker's staged shard file (hidden, scoped by its
# job's lease fence `e<epoch>-<job>` and the task: published only by the lease holder's rename), and the temporary
# names of an unfinished write of either.
_SHARD = r"shard-\d{5,}\.parquet"
_STAGED = rf"\.{_SHARD}\.e\d+-[0-9a-f]+-[0-9a-f]+\.staged"
_OWNED_NAME = re.compile(rf"^({_SHARD}|\.{_SHARD}\.[0-9a-f]+\.tmp|{_STAGED}|\.{_STAGED}\.[0-9a-f]+\.tmp)$")
# Folder names s2d writes beside a result folder it replaces whole (model/, eval/): the new one being written
# (`.model.<token>.tmp`) and the old one set aside during the swap (`.model.<token>.old`).
_SWAP_NAME = r"^\.{folder}\.[0-9a-f]{{12}}\.(tmp|old)$"
# The marker while another s2d process writes it (storage's atomic publish): a folder holding only these is being
# claimed by a job started at the same moment, not the user's; the lease then decides which of the two writes.
_MARKER_BEING_WRITTEN = re.compile(r"^\.\.s2d-output\.json\.[0-9a-f]{8}\.tmp$")


class ForeignOutput(RuntimeError):
    """`out` is not s2d's to write: a folder of the user's, a file, or an output of a newer s2d."""


def is_owned_name(name: str) -> bool:
    """A table folder's file that s2d wrote (a shard, a staged shard, or a temporary file of an interrupted write)."""
    return bool(_OWNED_NAME.match(name))


def swap_folder_name(folder: str, token: str, kind: str) -> str:
    """The temporary name of `folder` (model, eval) while it is replaced: kind `tmp` (the new one) or `old`."""
    name = f".{folder}.{token}.{kind}"
    if not is_swap_folder_name(name, folder):
        raise ValueError(f"not a temporary name s2d gives: {name}")
    return name


def is_swap_folder_name(name: str, folder: str) -> bool:
    """A folder s2d left beside `folder` when a replacement of it was interrupted (only these are removed)."""
    return bool(re.match(_SWAP_NAME.format(folder=re.escape(folder)), name))


def claim_pilot_folder(out: Any) -> OutputLocation:
    """`<out>/pilot/`, where `s2d pilot` writes, once `<out>` is s2d's (claimed like any output, so that the full job
    later writes beside the pilot) and `pilot/` is new or holds only the pilot's own names. Raises ForeignOutput
    otherwise: a pilot never writes into a folder of the user's."""
    location = claim_output(out, create=True)
    if not location.is_local:
        raise ForeignOutput(f"out={location.root}: a pilot trains and evaluates, so it needs a local or mounted path")
    pilot = OutputLocation.of(location.path(PILOT))
    kind = pilot.fs.get_file_info(pilot.root).type
    if kind == pafs.FileType.File:
        raise ForeignOutput(f"{pilot.root} is a file, not a pilot's folder: move it, or choose another `out`")
    if kind == pafs.FileType.Directory:
        foreign = sorted(
            name
            for name in (
                posixpath.basename(entry.path) for entry in pilot.fs.get_file_info(pafs.FileSelector(pilot.root))
            )
            if name not in PILOT_NAMES and not _is_pilot_temporary(name)
        )
        if foreign:
            raise ForeignOutput(
                f"{pilot.root} holds files the pilot did not write ({', '.join(foreign[:3])}): move them, or choose "
                "another `out`"
            )
    pilot.makedirs()
    return pilot


def _is_pilot_temporary(name: str) -> bool:
    """The temporary name of a pilot file being written (storage's atomic publish)."""
    return any(re.match(rf"^\.{re.escape(kept)}\.[0-9a-f]{{8}}\.tmp$", name) for kept in PILOT_NAMES)


def claim_output(out: Any, create: bool = True) -> OutputLocation:
    """The location of `out` once it is known to be s2d's: an output (adopted if it predates the marker), or, with
    `create`, a missing or empty folder, which is claimed by writing the marker. Raises ForeignOutput otherwise."""
    if not str(out).strip():
        raise ForeignOutput("out is empty: name the folder the output goes to (out=runs/name)")
    location = OutputLocation.of(out)
    kind = location.fs.get_file_info(location.root).type
    if kind == pafs.FileType.File:
        raise ForeignOutput(f"out={location.root} is a file, not a folder")
    if kind == pafs.FileType.Directory:
        # Listed before the marker is read: a job started at the same moment writes its marker before anything
        # else, so a listing without the marker holds at most that marker being written (never deleted once there).
        entries = location.fs.get_file_info(pafs.FileSelector(location.root))
        marker = location.read_bytes(MARKER)
        if marker is not None:
            check_format(_parse(marker, location.path(MARKER)).get("version"), location.path(MARKER))
            return location
        if _is_legacy_output(location):
            _write_marker(location)
            return location
        if any(not _MARKER_BEING_WRITTEN.match(posixpath.basename(entry.path)) for entry in entries):
            raise ForeignOutput(
                f"out={location.root} is not empty and is not an s2d output (no {MARKER}): s2d writes only into a "
                "new or empty folder or its own output; choose another `out`"
            )
    if not create:
        raise ForeignOutput(f"out={location.root} holds no s2d output: run `s2d generate` for it first")
    location.makedirs()
    _write_marker(location)
    return location


def manifest_can_be_set_aside(location: OutputLocation) -> bool:
    """Whether `set_aside_manifest` may move this output's manifest.json: the output is s2d's (its marker, of a
    format this s2d knows, is there) and the manifest is not one of a newer s2d (unknown, not unreadable)."""
    marker = location.read_bytes(MARKER)
    data = location.read_bytes(MANIFEST)
    if marker is None or data is None:
        return False
    try:
        check_format(_parse(marker, location.path(MARKER)).get("version"), location.path(MARKER))
        raw = json.loads(data)
    except ForeignOutput:
        return False
    except ValueError:
        return True  # not JSON: truncated or overwritten
    version = raw.get("format_version") if isinstance(raw, dict) else None
    return not (isinstance(version, int) and version > FORMAT_VERSION)


def set_aside_manifest(location: OutputLocation) -> str:
    """Move an unreadable manifest.json aside as `manifest.json.unreadable-<time>` (kept for a look, never deleted),
    so that `--force` starts the output afresh. Only where `manifest_can_be_set_aside`; returns the new path."""
    if not manifest_can_be_set_aside(location):
        raise ForeignOutput(f"{location.path(MANIFEST)}: not an unreadable manifest of an s2d output; left as it is")
    name = f"{MANIFEST}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    taken = 0
    while location.exists(name + (f"-{taken}" if taken else "")):  # a second --force within the second
        taken += 1
    aside = location.path(name + (f"-{taken}" if taken else ""))
    location.fs.move(location.path(MANIFEST), aside)
    return aside


def write_job_file(spec: JobSpec) -> None:
    OutputLocation.of(spec.out).write_bytes_atomic(dump_spec(spec).encode(), JOB_FILE)


def check_format(version: Any, where: str) -> None:
    """Refuse an output whose layout this s2d does not know (written by a newer s2d, or not s2d's at all)."""
    if not isinstance(version, int) or version < 0:
        raise ForeignOutput(f"{where}: not an s2d output (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ForeignOutput(
            f"{where}: written by a newer s2d (output format {version}; this s2d reads up to {FORMAT_VERSION}): "
            "upgrade s2d, or choose another `out`"
        )


def _write_marker(location: OutputLocation) -> None:
    marker = {"format": FORMAT, "version": FORMAT_VERSION}
    location.write_bytes_atomic(json.dumps(marker).encode(), MARKER)


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError as error:
        raise ForeignOutput(f"{where}: unreadable ({error})") from None
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT:
        raise ForeignOutput(f"{where}: not an s2d output marker")
    return parsed


def _is_legacy_output(location: OutputLocation) -> bool:
    """An output of s2d before the marker (format 0): its manifest has s2d's keys."""
    data = location.read_bytes(MANIFEST)
    if data is None:
        return False
    try:
        manifest = json.loads(data)
    except ValueError as error:
        raise ForeignOutput(f"{location.path(MANIFEST)}: unreadable manifest ({error})") from None
    return isinstance(manifest, dict) and {"fingerprint", "num_shards", "shards"} <= manifest.keys()
