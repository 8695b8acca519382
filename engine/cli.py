"""The `s2d` command line: run a job, or one stage of it, from a YAML job file plus key=value overrides."""

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

from s2d.engine.core.spec import JobSpec, SpecError, load_spec
from s2d.engine.data.lease import LeaseLost, OutputBusy
from s2d.engine.data.manifest import OutputConflict
from s2d.engine.data.models import ModelNotFound, check_model_reference
from s2d.engine.data.ownership import ForeignOutput, claim_output
from s2d.engine.data.storage import OutputError
from s2d.engine.stages.console import error, log_path_for, quiet, say
from s2d.engine.stages.export import FORMATS as EXPORT_FORMATS
from s2d.engine.stages.generate import GenerationFailed
from s2d.engine.stages.results import EvalResult, GenerateResult, StageResult, TrainResult

EPILOG = """examples:
  s2d run configs/demo.yaml
  s2d generate configs/demo.yaml task.num_inputs=8 sampling.n=4 out=runs/try
  s2d train configs/demo.yaml out=runs/try
  s2d eval configs/demo.yaml out=runs/try
  s2d status runs/try
  s2d inspect runs/try --rejected --reason no_answer -n 2
  s2d export runs/try --format messages --to pairs.jsonl
  s2d generate configs/demo.yaml data.path=my.jsonl data.columns.input=question task.name=freeform out=runs/mine
Overrides are dotted keys of the job file; values are parsed as YAML (8, 0.5, true, [q_proj, v_proj])."""

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

STAGE_HELP = {
    "run": "generate -> train -> eval in one go",
    "generate": "sample the System 2 method on Ray replicas, curate by self-consistency, write Parquet shards",
    "train": "fine-tune (LoRA or full) on the committed shards with DeepSpeed ZeRO on Ray Train; "
    "a rerun resumes from the last checkpoint",
    "eval": "compare System 1, System 2 and the distilled System 1 on held-out inputs: report.md + report.png",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2d",
        description="System 2 distillation at cluster scale.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in STAGE_HELP.items():
        stage = commands.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("job", help="YAML job file (see configs/demo.yaml)")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="override a job-file key")
        stage.add_argument(
            "--address", default=None, help="Ray cluster to use (default: RAY_ADDRESS, else an embedded local Ray)"
        )
        stage.add_argument("--no-progress", action="store_true", help="no progress bars")
        stage.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="show Ray, vLLM and DeepSpeed logs here (default: only in <out>/logs/)",
        )
        if name in ("run", "generate"):
            stage.add_argument(
                "--force",
                action="store_true",
                help="discard shards of a different job spec in `out` instead of refusing",
            )
    commands.add_parser("methods", help="list the System 2 methods", description="List the System 2 methods.")
    status = commands.add_parser(
        "status",
        help="committed / total shards of an output, its counts, and the exactly-once check",
        description="Show how far `s2d generate` got in OUT (a path or a pyarrow filesystem URI): committed / total "
        "shards, accepted / rejected / quarantined counts, and whether every input is in exactly one place. "
        "Exit 0 when complete and consistent, 3 when shards are still uncommitted (rerun to resume), 1 on a "
        "broken invariant.",
    )
    status.add_argument("out", help="a job's output directory")
    inspect = commands.add_parser(
        "inspect",
        help="a few accepted and rejected inputs with their samples, votes and why each was kept or dropped",
        description="Show committed inputs of OUT with every System 2 sample (each step's text, the extracted "
        "answer), the votes and the criterion's decision. Default: the first N accepted and N rejected inputs.",
    )
    inspect.add_argument("out", help="a job's output directory")
    inspect.add_argument("-n", type=int, default=2, help="inputs to show of each kind (default 2)")
    shown = inspect.add_mutually_exclusive_group()
    shown.add_argument("--accepted", action="store_true", help="only accepted inputs")
    shown.add_argument("--rejected", action="store_true", help="only rejected inputs")
    shown.add_argument("--quarantined", action="store_true", help="only quarantined (bad) input rows")
    inspect.add_argument(
        "--reason", default=None, help="only inputs rejected (or quarantined) for this reason, e.g. no_answer, tie"
    )
    inspect.add_argument("--id", dest="input_id", default=None, help="the input with this input_id")
    inspect.add_argument("--full", action="store_true", help="whole step texts instead of one line each")
    export = commands.add_parser(
        "export",
        help="write the pairs `s2d train` trains on as chat JSON Lines for other fine-tuning tools",
        description="Write the accepted prompt -> answer pairs of OUT (exactly those `s2d train` trains on) to a JSON "
        'Lines file: --format messages ({"messages": [user, assistant]}: TRL\'s SFTTrainer, axolotl, '
        "LLaMA-Factory, torchtune) or prompt_completion (TRL's prompt/completion, loss on the answer only).",
    )
    export.add_argument("out", help="a job's output directory")
    export.add_argument(
        "--format",
        dest="fmt",
        choices=list(EXPORT_FORMATS),
        default="messages",
        help="; ".join(f"{name}: {description}" for name, description in EXPORT_FORMATS.items()),
    )
    export.add_argument("--to", required=True, help="the JSON Lines file to write")
    report = commands.add_parser(
        "report",
        help="table + chart (accuracy vs tokens per answer) of one or more evaluated runs",
        description="Render the evaluation report of finished runs (each <out> needs eval/metrics.json from "
        "`s2d eval`). One run: <out>/eval/report.md and report.png. Several: one table and one chart in --to.",
    )
    report.add_argument("outs", nargs="+", metavar="OUT", help="a job's output directory")
    report.add_argument("--to", default=None, help="folder for report.md and report.png (needed for several runs)")
    _add_cluster_commands(commands)
    return parser


CLUSTER_ADDRESS_HELP = (
    "Ray job API of the cluster, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, else "
    "RAY_ADDRESS, else http://127.0.0.1:8265). A token-authenticated cluster needs "
    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH set"
)


def _add_cluster_commands(commands) -> None:
    submit = commands.add_parser(
        "submit",
        help="submit a job to a Ray cluster and follow its logs",
        description="Submit a job to an existing Ray cluster (Ray job submission API). s2d's code and the resolved "
        "job file travel in the job's runtime_env; `out` must be an absolute path the cluster's nodes share.",
    )
    submit.add_argument("job", help="YAML job file")
    submit.add_argument("overrides", nargs="*", metavar="key=value", help="override a job-file key")
    submit.add_argument("--stage", choices=list(STAGE_HELP), default="run", help="what the job runs (default: run)")
    submit.add_argument("--address", default=None, help=CLUSTER_ADDRESS_HELP)
    submit.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    submit.add_argument(
        "--python",
        default=None,
        help="Python on the cluster that has s2d's dependencies (default: this one for a local cluster, else `python`)",
    )
    for name, help_text in (("logs", "print a submitted job's logs"), ("stop", "stop a submitted job")):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("submission_id", help="the id `s2d submit` printed")
        command.add_argument("--address", default=None, help=CLUSTER_ADDRESS_HELP)
        if name == "logs":
            command.add_argument("--follow", action="store_true", help="keep printing until the job ends")


def _cluster_command(args: argparse.Namespace) -> int:
    from s2d.cluster import submit as jobs

    try:
        if args.command == "logs":
            if args.follow:
                status = jobs.follow(args.submission_id, args.address)
                print(f"s2d: job {args.submission_id} {status}", file=sys.stderr)
            else:
                sys.stdout.write(jobs.logs(args.submission_id, args.address))
            return 0
        if args.command == "stop":
            stopped = jobs.stop(args.submission_id, args.address)
            print(f"s2d: job {args.submission_id} " + ("stopping" if stopped else "had already ended"))
            return 0
        spec = load_spec(args.job, args.overrides)
        job_id = jobs.submit(spec, args.stage, args.address, args.python)
        print(
            f"s2d: submitted {job_id} ({args.stage} {args.job}); logs: s2d logs {job_id}, stop: s2d stop {job_id}",
            file=sys.stderr,
            flush=True,
        )
        if args.no_wait:
            print(job_id)
            return 0
        try:
            status = jobs.follow(job_id, args.address)
        except KeyboardInterrupt:
            print(f"\ns2d: stopped following; job {job_id} keeps running (s2d stop {job_id})", file=sys.stderr)
            return 130
        print(f"s2d: job {job_id} {status}", file=sys.stderr)
        return 0 if status == "SUCCEEDED" else 1
    except SpecError as error:
        print(f"s2d: error: {error}", file=sys.stderr)
        return 2
    except jobs.SubmitError as error:
        print(f"s2d: error: {error}", file=sys.stderr)
        return 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Overrides may also follow options (`s2d run job.yaml --force a=b`), which plain argparse refuses."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


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
        return _cluster_command(args)
    if args.command == "report":
        return _report(args)
    if args.command == "status":
        return _reading_output(_status, args.out)
    if args.command in ("inspect", "export"):
        return _reading_output(_read_output, args)
    try:
        spec = load_spec(args.job, args.overrides)
        check_model_reference(spec.model)
    except (SpecError, ModelNotFound) as problem:
        error(f"s2d: error: {problem}")
        return 2
    try:  # before anything is written there, the log included: `out` must be new, empty or s2d's own
        claim_output(spec.out, create=args.command in ("run", "generate"))
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


def _reading_output(command, argument) -> int:
    """A command that reads an output (status, inspect, export) ends with one line on what it could not read (a
    truncated or foreign manifest, a damaged shard), exit 1, never a traceback."""
    try:
        return command(argument)
    except (ForeignOutput, OutputConflict, ValueError, OSError) as problem:
        error(f"s2d: error: {' '.join(str(problem).splitlines())}")
        return 1


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

    stages = ["generate", "train", "eval"] if args.command == "run" else [args.command]
    started = time.monotonic()

    def report(result: StageResult) -> None:
        nonlocal started
        for line in _result_lines(spec, result):
            say(line)
        say(f"{_stage_of(result)}: {time.monotonic() - started:.0f} s")
        started = time.monotonic()

    run_job(spec, stages, force=getattr(args, "force", False), progress=not args.no_progress, on_result=report)
    for line in _where(spec, stages, log):
        say(line)
    return 0


def _stage_of(result: StageResult) -> str:
    return {GenerateResult: "generate", TrainResult: "train", EvalResult: "eval"}[type(result)]


def _result_lines(spec: JobSpec, result: StageResult) -> list[str]:
    """What a finished stage says on the terminal."""
    from s2d.engine.data.storage import OutputLocation

    if isinstance(result, GenerateResult):
        return [
            f"generate: {result.inputs} inputs ({result.skipped_committed} already committed), "
            f"{result.accepted} accepted, {result.rejected} rejected, {result.quarantined} quarantined "
            f"{result.reasons or ''} -> {OutputLocation.of(spec.out).path('shards')}"
        ]
    if isinstance(result, TrainResult):
        losses = result.losses or [float("nan")]
        resumed = result.resumed_from_step
        return [
            f"train: {result.steps} steps on {result.examples} examples"
            f"{f' (resumed at step {resumed})' if resumed is not None else ''}, "
            f"loss {losses[0]:.3f} -> {losses[-1]:.3f} -> {result.model_dir}"
        ]
    return [Path(result.report).read_text().rstrip()]


def _where(spec: JobSpec, stages: list[str], log: Path | None) -> list[str]:
    """The closing lines of a run: where its results are, and the command that uses each."""
    from s2d.engine.data.storage import OutputLocation

    location = OutputLocation.of(spec.out)
    entries = [("logs", str(log) if log else None, "Ray, vLLM and DeepSpeed")]
    if "generate" in stages:
        entries += [
            ("pairs", location.path("shards"), f"s2d export {spec.out} --format messages --to pairs.jsonl"),
            ("samples", location.path("samples") if spec.output.keep_samples else None, f"s2d inspect {spec.out}"),
            ("card", location.path("README.md"), f'datasets.load_dataset("{spec.out}")'),
        ]
    if "train" in stages:
        entries.append(("model", location.path("model"), "PEFT adapter, or a whole model with train.mode=full"))
    if "eval" in stages:
        entries.append(("report", location.path("eval", "report.md"), "with eval/report.png"))
    kept = [(name, path, use) for name, path, use in entries if path]
    width = max(len(path) for _, path, _ in kept)
    return ["results:"] + [f"  {name:<8}{path:<{width}}  {use}" for name, path, use in kept]


def _status(out: str) -> int:
    """Progress, the exactly-once check and every committed file verified (checksum, row count): exit 0 when all
    hold, 3 while shards are still to commit, 1 for anything wrong (a bad file: one line naming it and why)."""
    from s2d.engine.data.accounting import check_accounting
    from s2d.engine.data.manifest import read_manifest

    try:
        if read_manifest(out) is None:
            print(f"s2d: error: {out} has no manifest.json: `s2d generate` has not started there", file=sys.stderr)
            return 1
        report = check_accounting(out)
    except ForeignOutput as problem:
        print(f"s2d: error: {problem}", file=sys.stderr)
        return 1
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


def _read_output(args: argparse.Namespace) -> int:
    """`s2d inspect` and `s2d export`: read a finished (or partial) output."""
    try:
        if args.command == "export":
            from s2d.engine.stages.export import export_pairs

            count = export_pairs(args.out, args.to, args.fmt)
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
    except (ValueError, OSError, ForeignOutput) as problem:  # AlteredFile (a ValueError) names the file
        error(f"s2d: error: {problem}")
        return 1


def _report(args: argparse.Namespace) -> int:
    from s2d.engine.stages.report import write_report

    try:
        report, chart = write_report([Path(out) for out in args.outs], Path(args.to) if args.to else None)
    except (ValueError, FileNotFoundError) as error:
        print(f"s2d: error: {error}", file=sys.stderr)
        return 2
    print(report.read_text())
    print(f"report: {report}, chart: {chart}")
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
