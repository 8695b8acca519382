"""The `s2d` commands that read an output: status, inspect, export, report; and pilot's lines. Each ends with one
line on what it could not read, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2d.engine.data.manifest import OutputConflict
from s2d.engine.data.ownership import ForeignOutput
from s2d.engine.stages.console import error, say


def reading_output(command, argument) -> int:
    """A command that reads an output (status, inspect, export) ends with one line on what it could not read (a
    truncated or foreign manifest, a damaged shard), exit 1, never a traceback."""
    try:
        return command(argument)
    except (ForeignOutput, OutputConflict, ValueError, OSError) as problem:
        error(f"s2d: error: {' '.join(str(problem).splitlines())}")
        return 1


def _round_folders(out: str) -> list[Path]:
    """The round folders of a rounds job's output (`<out>/round-<r>`, in order); none for any other folder."""
    from s2d.engine.core.rounds import ROUNDS_DATA

    root = Path(out)
    if not (root / ROUNDS_DATA).is_file():
        return []
    numbered = [(int(p.name[6:]), p) for p in root.glob("round-*") if p.is_dir() and p.name[6:].isdigit()]
    return [folder for _, folder in sorted(numbered)]


def status_command(out: str) -> int:
    """Progress, the exactly-once check and every committed file verified (checksum, row count): exit 0 when all
    hold, 3 while shards are still to commit, 1 for anything wrong (a bad file: one line naming it and why)."""
    from s2d.engine.data.accounting import check_accounting
    from s2d.engine.data.manifest import read_manifest

    try:  # a foreign or unreadable manifest, a damaged file: reading_output's one line
        if read_manifest(out) is None and (rounds := _round_folders(out)):
            print(f"{out}: {len(rounds)} rounds (`s2d run --rounds`; {out}/rounds.md compares them)", flush=True)
            codes = [status_command(str(folder)) for folder in rounds]
            return 1 if 1 in codes else max(codes)  # a broken round first, then one still to finish
        if read_manifest(out) is None:
            print(f"s2d: error: {out} has no manifest.json: `s2d generate` has not started there", file=sys.stderr)
            return 1
        report = check_accounting(out)
    except OSError as error:
        print(f"s2d: error: cannot read {out}: {error}", file=sys.stderr)
        return 1
    counts = report.counts
    print(
        f"{out}: {report.committed_shards} / {report.total_shards} shards committed; "
        f"{sum(counts.values())} / {report.num_inputs} inputs: {counts['accepted']} accepted, "
        f"{counts['rejected']} rejected, {counts['quarantined']} quarantined"
        + (f"; {report.samples} samples" if report.samples is not None else "")
    )
    if report.unchecksummed_files:
        print(
            f"note: {report.unchecksummed_files} committed files have no checksum in manifest.json (committed by an "
            "older s2d): those are verified by row count only"
        )
    sys.stdout.flush()  # the summary before the errors, when both go to one pipe
    for problem in report.file_problems:
        print(f"s2d: error: {problem}", file=sys.stderr)
    problems = report.problems()
    if not problems:
        print(
            "exactly once: every input is in exactly one of shards/, rejected/, quarantine/"
            + (", and each generated input has its samples once in samples/" if report.samples is not None else "")
        )
        checked = "row count, and checksum where recorded" if report.unchecksummed_files else "checksum and row count"
        print(f"verified: every committed file is as committed (its {checked} in manifest.json)")
        return 0
    for problem in problems[len(report.file_problems) :]:
        print(f"  {problem}")
    if report.file_problems:
        return 1
    return 3 if report.complete is False and not report.duplicated_ids else 1


def read_output(args: argparse.Namespace) -> int:
    """`s2d inspect` and `s2d export`: read a finished (or partial) output. What cannot be read (AlteredFile names
    the file) is reading_output's one line."""
    if args.command == "export":
        from s2d.engine.stages.export import export_pairs

        count = export_pairs(args.out, args.to, args.fmt, overwrite=args.overwrite)
        say(f"export: {count} pairs ({args.fmt}) -> {args.to}")
        return 0
    from s2d.engine.stages.inspection import Selection, inspect_output

    if args.n < 1:
        raise ValueError("-n must be at least 1")
    kinds = (
        ("shards",)
        if args.accepted
        else ("quarantine",)
        if args.quarantined
        else ("rejected",)
        if args.rejected
        else ("rejected", "quarantine")
        if args.reason
        else ("shards", "rejected", "quarantine")
        if args.input_id
        else ("shards", "rejected")
    )
    say(inspect_output(args.out, Selection(kinds, args.reason, args.input_id, args.n, args.full)))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from s2d.engine.stages.report import write_report

    try:
        report, chart = write_report([Path(out) for out in args.outs], Path(args.to) if args.to else None)
    except (ValueError, FileNotFoundError) as error:
        print(f"s2d: error: {error}", file=sys.stderr)
        return 2
    except (ForeignOutput, OSError) as error:
        print(f"s2d: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 1
    print(report.read_text())
    print(f"report: {report}, chart: {chart}")
    return 0


def pilot_command(args: argparse.Namespace, spec, log: Path | None) -> int:
    """`s2d pilot`: one line per phase, the verdict, and where the report is (errors: the caller's one line)."""
    from s2d.engine.stages.api import pilot

    result = pilot(
        spec, inputs=args.inputs, held_out=args.held_out, progress=not args.no_progress, on_line=say, job_name=args.job
    )
    say(f"results:\n  report  {result.report}\n  metrics {result.metrics_path}" + (f"\n  logs    {log}" if log else ""))
    return 0
