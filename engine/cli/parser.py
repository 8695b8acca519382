"""The `s2d` command line's arguments: the stage commands, the output commands and the cluster commands."""

from __future__ import annotations

import argparse
import sys

from s2d.engine.core.spec import SpecError, load_spec
from s2d.engine.stages.export import FORMATS as EXPORT_FORMATS

EPILOG = """examples:
  s2d run configs/demo.yaml
  s2d run configs/demo.yaml --rounds 2 out=runs/rounds
  s2d generate configs/demo.yaml task.num_inputs=8 sampling.n=4 out=runs/try
  s2d train configs/demo.yaml out=runs/try
  s2d eval configs/demo.yaml out=runs/try
  s2d pilot configs/demo.yaml --inputs 200
  s2d status runs/try
  s2d inspect runs/try --rejected --reason no_answer -n 2
  s2d export runs/try --format messages --to pairs.jsonl
  s2d generate configs/demo.yaml data.path=my.jsonl data.columns.input=question task.name=freeform out=runs/mine
Overrides are dotted keys of the job file; values are parsed as YAML (8, 0.5, true, [q_proj, v_proj])."""

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
        if name == "run":
            stage.add_argument(
                "--rounds",
                type=int,
                default=None,
                metavar="K",
                help="iterated distillation: K rounds, each sampling from the round before's distilled model, in "
                "<out>/round-<r>/, compared in <out>/rounds.md (the job file's `rounds` key)",
            )
        if name in ("run", "train", "eval"):
            stage.add_argument(
                "--seeds",
                type=int,
                default=None,
                metavar="K",
                help="train and evaluate K seeds of the distillation (train.seed + s, <out>/model-seed<s>/) and report "
                "the spread of distilled accuracy and agreement (the job file's `eval.seeds` key)",
            )
            stage.add_argument(
                "--allow-partial",
                action="store_true",
                help="train (or evaluate) on what an unfinished `s2d generate` committed instead of refusing",
            )
    _add_pilot_command(commands)
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
    export.add_argument("--to", required=True, help="the JSON Lines file to write (refused if it exists)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --to file")
    report = commands.add_parser(
        "report",
        help="table + chart (accuracy vs tokens per answer) of one or more evaluated runs",
        description="Render the evaluation report of finished runs (each <out> needs eval/metrics.json from "
        "`s2d eval`). One run: <out>/eval/report.md and report.png. Several: one table and one chart in --to.",
    )
    report.add_argument("outs", nargs="+", metavar="OUT", help="a job's output directory")
    report.add_argument(
        "--to",
        default=None,
        help="folder for report.md and report.png (needed for several runs): new, empty, or one s2d report wrote",
    )
    _add_cluster_commands(commands)
    return parser


PILOT_HELP = (
    "a bounded run before the big one: the job's stages on its first N inputs -> acceptance, threshold curve, "
    "agreement with System 2 before/after a short LoRA (paired test), the full job projected, and a verdict"
)


def _add_pilot_command(commands) -> None:
    pilot = commands.add_parser("pilot", help=PILOT_HELP, description=PILOT_HELP + "; <out>/pilot/report.md")
    pilot.add_argument("job", help="YAML job file (see configs/demo.yaml)")
    pilot.add_argument("overrides", nargs="*", metavar="key=value", help="override a job-file key")
    pilot.add_argument("--inputs", type=int, default=200, help="inputs to run, the job's first (default 200)")
    pilot.add_argument(
        "--held-out",
        type=int,
        default=200,
        help="held-out inputs at most, never trained on (default 200; fewer is faster but the paired test weaker)",
    )
    pilot.add_argument(
        "--address", default=None, help="Ray cluster to use (default: RAY_ADDRESS, else an embedded local Ray)"
    )
    pilot.add_argument("--no-progress", action="store_true", help="no progress bars")
    pilot.add_argument("-v", "--verbose", action="store_true", help="show Ray, vLLM and DeepSpeed logs here")


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
    submit.add_argument("--force", action="store_true", help="as for `s2d run`/`s2d generate` (those stages only)")
    submit.add_argument(
        "--allow-partial", action="store_true", help="as for `s2d run`/`train`/`eval` (those stages only)"
    )
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


# The flags a submitted stage passes on to the `s2d <stage>` it runs, and the stages that take each.
_PASSED_FLAGS = {"force": ("run", "generate"), "allow_partial": ("run", "train", "eval")}


def _stage_flags(args: argparse.Namespace) -> tuple[str, ...]:
    flags = []
    for name, stages in _PASSED_FLAGS.items():
        if getattr(args, name):
            flag = "--" + name.replace("_", "-")
            if args.stage not in stages:
                raise SpecError(f"{flag} applies to --stage {' or '.join(stages)}, not {args.stage}")
            flags.append(flag)
    return tuple(flags)


def cluster_command(args: argparse.Namespace) -> int:
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
        job_id = jobs.submit(spec, args.stage, args.address, args.python, flags=_stage_flags(args))
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
    if getattr(args, "rounds", None) is not None:  # the job key, validated with the rest of the job
        args.overrides = [*args.overrides, f"rounds={args.rounds}"]
    if getattr(args, "seeds", None) is not None:
        args.overrides = [*args.overrides, f"eval.seeds={args.seeds}"]
    return args
