"""The `s2d` command line: run a job, or one stage of it, from a YAML job file plus key=value overrides.

The arguments are `parser.py`; the commands that read an output (status, inspect, export, report) `outputs.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from s2d.engine.cli.outputs import pilot_command, read_output, reading_output, report_command, status_command
from s2d.engine.cli.parser import build_parser, cluster_command, parse_args
from s2d.engine.core.seeds import model_folder
from s2d.engine.core.spec import JobSpec, SpecError, load_spec
from s2d.engine.data.lease import LeaseLost, OutputBusy
from s2d.engine.data.manifest import OutputConflict
from s2d.engine.data.models import ModelNotFound, check_model_reference
from s2d.engine.data.ownership import ForeignOutput, claim_output
from s2d.engine.data.storage import OutputError
from s2d.engine.stages.api import check_student
from s2d.engine.stages.console import error, log_path_for, quiet, say
from s2d.engine.stages.generate import GenerationFailed
from s2d.engine.stages.results import EvalResult, GenerateResult, StageResult, TrainResult

# Failures whose message says it all (no traceback needed to act on them).
EXPECTED_ERRORS = (
    OutputConflict,
    ForeignOutput,
    ValueError,
    FileNotFoundError,
    OutputError,
    GenerationFailed,
    OutputBusy,
    LeaseLost,
)
# Another job holds <out> (s2d.engine.data.lease): try again later (EX_TEMPFAIL).
EXIT_BUSY = 75


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "methods":
        from s2d.engine.core.methods import list_methods

        methods = list_methods()
        width = max(len(name) for name, _ in methods)
        for name, description in methods:
            print(f"{name:<{width}}  {description}")
        return 0
    if args.command in ("submit", "logs", "stop"):
        return cluster_command(args)
    if args.command == "report":
        return report_command(args)
    if args.command == "status":
        return reading_output(status_command, args.out)
    if args.command in ("inspect", "export"):
        return reading_output(read_output, args)
    try:
        spec = load_spec(args.job, args.overrides)
        # before `out` is claimed or a log written; a pilot measures one round
        if spec.rounds > 1 and args.command not in ("run", "pilot"):
            raise SpecError(f"rounds={spec.rounds}: a rounds job runs every stage of each round: use `s2d run`")
        check_model_reference(spec.model)
        if args.command in ("run", "train", "eval", "pilot"):
            check_student(spec)
    except (SpecError, ModelNotFound) as problem:
        error(f"s2d: error: {problem}")
        return 2
    try:  # before anything is written there, the log included: `out` must be new, empty or s2d's own
        claim_output(spec.out, create=args.command in ("run", "generate", "pilot"))
    except ForeignOutput as problem:
        error(f"s2d: error: {problem}")
        return 2
    except OutputError as problem:
        error(f"s2d: error: {problem}")
        return 1
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    if args.verbose:
        with _sigterm_interrupts(), _own_ray():
            return _run_reporting_errors(args, spec, log=None)
    from s2d.engine.data.storage import OutputLocation

    location = OutputLocation.of(spec.out)
    log = log_path_for(spec.out_path if location.is_local else None, args.command)
    say(f"s2d: {args.command} {args.job}; Ray, vLLM and DeepSpeed logs -> {log} (-v shows them here)")
    with _sigterm_interrupts(), quiet(log), _own_ray():
        return _run_reporting_errors(args, spec, log)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, a stopped container): stopped the way Ctrl-C stops a run, with the same cleanup
    (engines stopped, the lease released, committed shards kept)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_interrupts():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _own_ray():
    """Shut down the Ray this run started before the run ends, while its output still goes to the run's log:
    left to the interpreter's exit, its actors' last words would reach the terminal after s2d's last line."""
    ray = sys.modules.get("ray")
    already_running = ray is not None and ray.is_initialized()
    try:
        yield
    finally:
        ray = sys.modules.get("ray")
        if not already_running and ray is not None and ray.is_initialized():
            ray.shutdown()


def _run_reporting_errors(args: argparse.Namespace, spec: JobSpec, log: Path | None) -> int:
    """Run the stages; a failure ends with one line, its cause (and, in a quiet run, the log holding the rest)."""
    try:
        return _run_stages(args, spec, log)
    except (KeyboardInterrupt, Exception) as problem:  # noqa: BLE001 - every failure gets its one line
        if log is None and not isinstance(problem, EXPECTED_ERRORS + (KeyboardInterrupt,)):
            raise  # -v: an unexpected error shows its traceback, as Python prints it
        if log is not None:
            traceback.print_exc()  # into the log (sys.stderr is the log in a quiet run)
        where = f" (log: {log})" if log else ""
        if isinstance(problem, KeyboardInterrupt):
            how = "terminated (SIGTERM)" if isinstance(problem, Terminated) else "interrupted"
            error(f"s2d: {how}; committed shards are kept, rerun the same command to resume{where}")
            return 143 if isinstance(problem, Terminated) else 130
        if isinstance(problem, (OutputConflict, ForeignOutput)):
            error(f"s2d: error: {problem}")
            return 2
        if isinstance(problem, (OutputBusy, LeaseLost)):
            error(f"s2d: {problem}")  # one line: who holds <out>, and what to do
            return EXIT_BUSY
        if isinstance(problem, EXPECTED_ERRORS):
            error(f"s2d: error: {problem}{where}")
            return 1
        from s2d.engine.stages.generate import root_cause

        error(f"s2d: error: {root_cause(problem)} (traceback in {log})")
        return 1


def _run_stages(args: argparse.Namespace, spec: JobSpec, log: Path | None = None) -> int:
    from s2d.engine.stages.api import run_job

    if args.command == "pilot":
        return pilot_command(args, spec, log)
    stages = ["generate", "train", "eval"] if args.command == "run" else [args.command]
    started = time.monotonic()

    def report(result: StageResult) -> None:
        nonlocal started
        for line in _result_lines(result):
            say(line)
        say(f"{_stage_of(result)}: {time.monotonic() - started:.0f} s")
        started = time.monotonic()

    run_job(
        spec,
        stages,
        force=getattr(args, "force", False),
        allow_partial=getattr(args, "allow_partial", False),
        progress=not args.no_progress,
        on_result=report,
    )
    for line in _where(spec, stages, log):
        say(line)
    return 0


def _stage_of(result: StageResult) -> str:
    return {GenerateResult: "generate", TrainResult: "train", EvalResult: "eval"}[type(result)]


def _result_lines(result: StageResult) -> list[str]:
    """What a finished stage says on the terminal."""
    from s2d.engine.data.storage import OutputLocation

    if isinstance(result, GenerateResult):
        return [
            f"generate: {result.inputs} inputs ({result.skipped_committed} already committed), "
            f"{result.accepted} accepted, {result.rejected} rejected, {result.quarantined} quarantined "
            f"{result.reasons or ''} -> {OutputLocation.of(result.out).path('shards')}"  # a round's own out
        ]
    if isinstance(result, TrainResult):
        losses = result.losses or [float("nan")]
        resumed = result.resumed_from_step
        lines = [
            f"train: {result.steps} steps on {result.examples} examples"
            f"{f' (resumed at step {resumed})' if resumed is not None else ''}, "
            f"loss {losses[0]:.3f} -> {losses[-1]:.3f} -> {result.model_dir}"
        ]
        for seed in result.seeds[1:]:  # eval.seeds: the other seeds, each in its own folder
            done = "already trained, kept" if seed["reused"] else f"{seed['steps']} steps"
            losses = seed["losses"] or [float("nan")]
            lines.append(
                f"train: seed {seed['seed']} (train.seed={seed['train_seed']}): {done}, "
                f"loss {losses[0]:.3f} -> {losses[-1]:.3f} -> {seed['model_dir']}"
            )
        return lines
    return [Path(result.report).read_text().rstrip()]


def _where(spec: JobSpec, stages: list[str], log: Path | None) -> list[str]:
    """The closing lines of a run: where its results are, and the command that uses each."""
    from s2d.engine.data.storage import OutputLocation

    location = OutputLocation.of(spec.out)
    entries = [("logs", str(log) if log else None, "Ray, vLLM and DeepSpeed")]
    if spec.rounds > 1:  # each round a whole output of its own
        from s2d.engine.core.rounds import ROUNDS_REPORT, round_dir

        entries.append(("rounds", location.path(ROUNDS_REPORT), "the rounds side by side, with rounds.json"))
        entries += [
            (f"round {r}", round_dir(spec.out, r), f"s2d status {round_dir(spec.out, r)}")
            for r in range(1, spec.rounds + 1)
        ]
        stages = []
    if "generate" in stages:
        entries += [
            ("pairs", location.path("shards"), f"s2d export {spec.out} --format messages --to pairs.jsonl"),
            ("samples", location.path("samples") if spec.output.keep_samples else None, f"s2d inspect {spec.out}"),
            ("card", location.path("README.md"), f'datasets.load_dataset("{spec.out}")'),
        ]
    if "train" in stages:
        entries.append(("model", location.path("model"), "PEFT adapter, or a whole model with train.mode=full"))
        if spec.eval.seeds > 1:  # the other seeds' models, beside model/
            more = f" .. {model_folder(spec.eval.seeds - 1)}" if spec.eval.seeds > 2 else ""
            use = f"seeds 1..{spec.eval.seeds - 1}: train.seed + s" if spec.eval.seeds > 2 else "train.seed + 1"
            entries.append(("seeds", location.path(model_folder(1)) + more, use))
    if "eval" in stages:
        entries.append(("report", location.path("eval", "report.md"), "with eval/report.png"))
    kept = [(name, path, use) for name, path, use in entries if path]
    width = max(len(path) for _, path, _ in kept)
    return ["results:"] + [f"  {name:<8}{path:<{width}}  {use}" for name, path, use in kept]


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["build_parser", "entrypoint", "main", "parse_args"]
