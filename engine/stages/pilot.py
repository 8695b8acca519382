"""`s2d pilot`: a bounded run of the job before the big one, and what it says about the big one.

The pilot runs the job's own stages (generate, train, eval through the API's run_job) on a derived job: the first
N inputs of the job's source (the full job sees the same ones: tasks and files are read in a fixed order), the
job's held-out split (disjoint from every training input by construction), into `<out>/pilot/run`. It then reads
what they wrote: the votes of every input (the accepted and rejected tables) for acceptance, rejection reasons,
tokens and the threshold curve; eval's metrics.json for agreement with System 2 before and after the pilot's LoRA
(the paired test) and the measured System 2 rate. The decisions (curve, projection, verdict) are
engine/core/pilot.py. `<out>` is claimed like any output (engine/data/ownership.py), so a later `s2d generate`
into `<out>` writes beside `pilot/`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from s2d.engine.core.pilot import InputVotes, VerdictRule, decide, min_votes_for, project, threshold_curve
from s2d.engine.core.spec import JobSpec, parse_spec
from s2d.engine.core.stats import PairedComparison, format_rate, wilson_interval
from s2d.engine.data.ownership import claim_pilot_folder
from s2d.engine.stages.results import PilotResult

DEFAULT_INPUTS = 200
DEFAULT_HELD_OUT = 200
_TABLES = ("shards", "rejected", "quarantine", "samples")


def full_input_count(spec: JobSpec) -> int:
    """How many inputs the full job has (a file source is counted, streaming)."""
    from s2d.engine.data.inputs import read_units

    return read_units(spec)[0]


def pilot_spec(spec: JobSpec, inputs: int, held_out: int, run_dir: str) -> JobSpec:
    """The derived job: the first `inputs` of the job's source, at most `held_out` held-out inputs, a LoRA (the
    pilot's signal is a short adapter, whatever the full job trains), into `run_dir`."""
    values: dict[str, Any] = {"out": run_dir, "eval.num_inputs": min(held_out, spec.eval.num_inputs)}
    values["data.limit" if spec.data.path else "task.num_inputs"] = inputs
    # the adapter on the base is the pilot's signal: no merged copy, no second engine for it
    values |= {"train.mode": "lora", "train.merge": False, "eval.distilled": "adapter", "eval.seeds": 1}
    if spec.rounds > 1:  # iterated distillation: the pilot measures its first round
        values["rounds"] = 1
    return parse_spec(spec.model_dump(mode="json"), (), values=values)


def run_pilot(
    spec: JobSpec,
    run_stages: Callable[..., Any],
    *,
    inputs: int = DEFAULT_INPUTS,
    held_out: int = DEFAULT_HELD_OUT,
    progress: bool = True,
    on_line: Callable[[str], None] = lambda line: None,
    job_name: str | None = None,
) -> PilotResult:
    """Run the pilot; `run_stages` is the API's run_job (passed in: the API imports this module)."""
    if inputs < 1 or held_out < 1:
        raise ValueError(f"--inputs and --held-out must be at least 1, got {inputs} and {held_out}")
    started = time.monotonic()
    location = claim_pilot_folder(spec.out)
    pilot_dir = Path(location.root)
    full = full_input_count(spec)
    used = min(inputs, full)
    derived = pilot_spec(spec, used, held_out, str(pilot_dir / "run"))
    on_line(
        f"pilot: {used} of the job's {full:,} inputs, up to {derived.eval.num_inputs} held out -> {pilot_dir}"
        + (" (the job has no more inputs: this pilot is the whole job)" if used == full else "")
    )
    phases: dict[str, float] = {}
    clock = time.monotonic()
    # force: pilot/run is the pilot's own; a pilot of another size or job replaces it instead of being refused
    generated = run_stages(derived, ("generate",), force=True, progress=progress).generate
    phases["generate"] = time.monotonic() - clock
    on_line(f"pilot: generate: {generated.accepted} of {used} accepted ({phases['generate']:.0f} s)")
    trained = evaluated = None
    if generated.accepted:
        clock = time.monotonic()

        def phase_done(result: Any) -> None:
            nonlocal clock
            name = "train" if hasattr(result, "steps") else "eval"
            phases[name] = time.monotonic() - clock
            clock = time.monotonic()
            detail = f"{result.steps} LoRA steps on {result.examples} examples" if name == "train" else "done"
            on_line(f"pilot: {name}: {detail} ({phases[name]:.0f} s)")

        job = run_stages(derived, ("train", "eval"), progress=progress, on_result=phase_done)
        trained, evaluated = job.train, job.eval
    else:
        on_line("pilot: nothing passed the vote: no LoRA to train, no held-out comparison")
    metrics = analyse(spec, derived, generated, trained, evaluated, full, phases, job_name)
    metrics["pilot_seconds"] = round(time.monotonic() - started, 1)
    location.write_bytes_atomic((json.dumps(metrics, indent=2) + "\n").encode(), "metrics.json")
    location.write_bytes_atomic(render_pilot_report(metrics).encode(), "report.md")
    verdict = metrics["verdict"]
    on_line(f"pilot: verdict: {verdict['label']}: {verdict['because']}")
    return PilotResult(
        verdict=verdict["label"],
        because=verdict["because"],
        report=str(pilot_dir / "report.md"),
        metrics_path=str(pilot_dir / "metrics.json"),
        seconds=metrics["pilot_seconds"],
        metrics=metrics,
    )


def input_votes(run_dir: Path, labels: dict[str, str] | None) -> list[InputVotes]:
    """Every curated input's vote, from the accepted and the rejected tables (quarantined inputs had none)."""
    votes = []
    for row in _rows(run_dir / "shards", ["input_id", "answer", "votes", "num_samples"]):
        label = labels.get(row["input_id"]) if labels else None
        votes.append(InputVotes(row["answer"], int(row["votes"]), False, int(row["num_samples"]), label))
    for row in _rows(run_dir / "rejected", ["input_id", "answer_counts", "num_samples"]):
        counts = row["answer_counts"] or []
        top = counts[0] if counts else {"answer": None, "votes": 0}
        tied = len(counts) > 1 and counts[1]["votes"] == top["votes"]
        label = labels.get(row["input_id"]) if labels else None
        votes.append(InputVotes(top["answer"], int(top["votes"]), tied, int(row["num_samples"] or 0), label))
    return votes


def _rows(folder: Path, columns: list[str]) -> list[dict[str, Any]]:
    files = sorted(folder.glob("shard-*.parquet")) if folder.is_dir() else []
    return [row for path in files for row in pq.read_table(path, columns=columns).to_pylist()]


def _labels(spec: JobSpec, count: int) -> dict[str, str] | None:
    """The ground truth of the pilot's inputs, for a built-in task (a file's labels are not read here)."""
    if spec.data.path:
        return None
    from s2d.engine.core.tasks import get_task

    items = get_task(spec.task.name).generate(count, spec.task.seed, "train")
    labels = {item.input_id: item.label for item in items}
    return labels if all(label is not None for label in labels.values()) else None


def _output_bytes(run_dir: Path) -> int:
    return sum(
        path.stat().st_size
        for table in _TABLES
        if (run_dir / table).is_dir()
        for path in (run_dir / table).glob("*.parquet")
    )


def _tokens(run_dir: Path) -> float:
    """System 2's generated tokens over every curated input (system2_tokens is the mean per sample)."""
    columns = ["system2_tokens", "num_samples"]
    rows = _rows(run_dir / "shards", columns) + _rows(run_dir / "rejected", columns)
    return sum(float(row["system2_tokens"] or 0) * int(row["num_samples"] or 0) for row in rows)


def hardware() -> str:
    """The machine the pilot measured on, in words (the projection's rate holds for that hardware)."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = "GPU present" if shutil.which("nvidia-smi") else "no GPU"
    return f"{name}, {os.cpu_count()} cores, {gpus}"


def _agreement_comparison(eval_metrics: dict[str, Any] | None) -> PairedComparison | None:
    for comparison in (eval_metrics or {}).get("comparisons", []):
        if comparison["measure"] == "agreement" and comparison["versus_kind"] == "system1":
            return PairedComparison(**{key: comparison[key] for key in PairedComparison.__dataclass_fields__})
    return None


def analyse(
    spec: JobSpec,
    derived: JobSpec,
    generated: Any,
    trained: Any,
    evaluated: Any,
    full_inputs: int,
    phases: dict[str, float],
    job_name: str | None = None,
) -> dict[str, Any]:
    """The pilot's metrics.json: what its stages wrote, the threshold curve, the projection and the verdict."""
    run_dir = derived.out_path
    inputs = generated.accepted + generated.rejected + generated.quarantined
    labels = _labels(derived, inputs)
    votes = input_votes(run_dir, labels)
    n = derived.sampling.n
    tokens = _tokens(run_dir)
    reasons = Counter(row["reason"] for row in _rows(run_dir / "rejected", ["reason"]))
    reasons.update(row["reason"] for row in _rows(run_dir / "quarantine", ["reason"]))
    rate_low, rate_high = wilson_interval(generated.accepted, max(inputs, 1))
    eval_metrics = evaluated.metrics if evaluated else None
    comparison = _agreement_comparison(eval_metrics)
    verdict = decide(generated.accepted, comparison, VerdictRule())
    rate = _rate(run_dir, eval_metrics, generated)
    replicas = 1 if rate["source"] == "eval" else derived.generation.replicas
    projection = project(
        pilot_inputs=max(inputs, 1),
        pilot_accepted=generated.accepted,
        full_inputs=full_inputs,
        seconds_per_input=rate["seconds_per_input"],
        replicas=replicas,
        output_bytes=_output_bytes(run_dir),
        start_seconds=rate["start_s"],
    )
    return {
        "job": job_name,
        "task": derived.task.name if not derived.data.path else derived.data.path,
        "method": derived.method.name,
        "model": derived.model,
        "rule": derived.curate.rule,
        "hardware": hardware(),
        "run": str(run_dir),
        "inputs": inputs,
        "full_inputs": full_inputs,
        "held_out": (eval_metrics or {}).get("eval_inputs"),
        "samples_per_input": n,
        "accepted": generated.accepted,
        "rejected": generated.rejected,
        "quarantined": generated.quarantined,
        "accept_rate": generated.accepted / inputs if inputs else 0.0,
        "accept_rate_ci": [rate_low, rate_high],
        "reasons": dict(reasons.most_common()),
        "tokens": round(tokens),
        "tokens_per_input": tokens / inputs if inputs else 0.0,
        "tokens_per_accepted": tokens / generated.accepted if generated.accepted else None,
        "job_min_votes": min_votes_for(derived.curate.threshold, n) if derived.curate.rule == "majority" else None,
        "threshold_curve": [vars(point) for point in threshold_curve(votes, n)],
        "labels": labels is not None,
        "train": None if trained is None else {"steps": trained.steps, "examples": trained.examples},
        "systems": (eval_metrics or {}).get("systems", []),
        "comparisons": (eval_metrics or {}).get("comparisons", []),
        "agreement": None if comparison is None else vars(comparison),
        "rate": rate | {"replicas": replicas},
        "projection": vars(projection),
        "phase_seconds": {name: round(seconds, 1) for name, seconds in phases.items()},
        "verdict": {"label": verdict.label, "because": verdict.because, "rule": vars(VerdictRule())},
    }


def _rate(run_dir: Path, eval_metrics: dict[str, Any] | None, generated: Any) -> dict[str, Any]:
    """Seconds per input on the pilot's replicas with the engine start taken out, one replica's start-up, and the
    arithmetic. The generate stage's pipeline time minus the engine start that eval measured apart (same model,
    same machine); without an eval, or after a resumed generate, eval's own System 2 pass (the job's method and n
    on the held-out inputs, one replica); failing both, the generate stage's whole wall time (start-up included:
    an upper bound)."""
    stage = {}
    if (run_dir / "metrics.json").is_file():
        stage = json.loads((run_dir / "metrics.json").read_text())
    pipeline = (stage.get("stage_seconds") or {}).get("generate + curate pipeline")
    ran = int(stage.get("inputs") or 0)  # inputs this generate run processed (0 after a full resume)
    start = float((eval_metrics or {}).get("engine_start_s") or 0.0)
    first = (stage.get("stage_seconds") or {}).get("replica start + first batch") or 0.0
    if pipeline and ran and start and pipeline > start:
        start = min(start, first) if first else start
        rate = (pipeline - start) / ran
        how = f"({pipeline:.1f} s generate pipeline - {start:.1f} s engine start measured by eval) / {ran} inputs"
        return {"seconds_per_input": rate, "start_s": start, "source": "generate", "arithmetic": f"{how} = {rate:.3f}"}
    system2 = ((eval_metrics or {}).get("seconds_per_input") or {}).get("system2")
    if system2:
        how = f"eval's System 2 pass on the held-out inputs, one replica, engine start ({start:.1f} s) apart"
        return {"seconds_per_input": system2, "start_s": start, "source": "eval", "arithmetic": f"{how}: {system2:.3f}"}
    inputs = max(generated.accepted + generated.rejected + generated.quarantined, 1)
    rate = generated.seconds / inputs
    how = f"{generated.seconds:.1f} s generate wall time / {inputs} inputs, start-up included (an upper bound)"
    return {"seconds_per_input": rate, "start_s": 0.0, "source": "generate wall", "arithmetic": f"{how} = {rate:.3f}"}


def render_pilot_report(metrics: dict[str, Any]) -> str:
    """report.md: the verdict first, then the numbers behind it and the projection with its arithmetic."""
    verdict, rule = metrics["verdict"], metrics["verdict"]["rule"]
    low, high = metrics["accept_rate_ci"]
    lines = [
        f"# Pilot: {metrics['job'] or metrics['task']} ({metrics['task']} x {metrics['method']}, {metrics['model']})",
        "",
        f"**Verdict: {verdict['label']}**: {verdict['because']}.",
        "",
        f"The rule, fixed before any pilot ran: no accepted input: does not distil; no held-out input where System "
        f"2's vote passes: inconclusive; agreement with System 2 higher after the pilot's LoRA than before with "
        f"McNemar's exact p < {rule['alpha']:g}: distils; the 95% upper bound of that gain below "
        f"{rule['min_gain'] * 100:+.0f} pts: does not distil; else inconclusive. Labels play no part in it.",
        "",
        f"Ran on {metrics['hardware']}: {metrics['inputs']} of the job's {metrics['full_inputs']:,} inputs, "
        f"{metrics['held_out'] or 0} held-out inputs (disjoint from every training input), "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in metrics["phase_seconds"].items())
        + f"; {metrics['pilot_seconds'] / 60:.1f} min in all. The run: `{metrics['run']}`.",
        "",
        "## Acceptance",
        "",
        f"- accepted: {metrics['accepted']} of {metrics['inputs']} ({metrics['accept_rate']:.1%}, 95% CI "
        f"[{low:.1%}, {high:.1%}]); rejected {metrics['rejected']}, quarantined {metrics['quarantined']}",
        "- why rejected: "
        + (", ".join(f"{reason} {count}" for reason, count in metrics["reasons"].items()) or "nothing was"),
        f"- System 2 tokens: {metrics['tokens']:,} in all, {metrics['tokens_per_input']:.0f} per input "
        f"({metrics['samples_per_input']} samples), "
        + (
            f"{metrics['tokens_per_accepted']:.0f} per accepted example"
            if metrics["tokens_per_accepted"]
            else "none accepted"
        ),
        "",
        "## Threshold curve",
        "",
        f"An input is kept at k when its top answer has at least k of its {metrics['samples_per_input']} votes and no "
        "tie. " + ("'right' compares the kept answer with the task's label." if metrics["labels"] else "No labels."),
        "",
        *(
            [f"This job decides by `{metrics['rule']}`, not by this vote alone: the curve is the plain vote's.", ""]
            if metrics["rule"] != "majority"
            else []
        ),
        "| votes needed (k of n) | inputs kept | share kept | kept answers right |",
        "|---|---:|---:|---:|",
    ]
    for point in metrics["threshold_curve"]:
        mark = " (the job's vote)" if point["min_votes"] == metrics["job_min_votes"] else ""
        right = "n/a" if point["right"] is None else f"{point['right']} ({format_rate(point['precision'])})"
        lines.append(
            f"| {point['min_votes']} of {metrics['samples_per_input']}{mark} | {point['accepted']} | "
            f"{point['share']:.1%} | {right} |"
        )
    lines += ["", "## Distillability (label-free)", ""]
    agreement = metrics["agreement"]
    if agreement is None:
        lines.append("No paired agreement test: " + verdict["because"] + ".")
    else:
        lines.append(
            f"A LoRA of {metrics['train']['steps']} steps on the pilot's {metrics['train']['examples']} accepted "
            f"examples; agreement with System 2's majority on the {agreement['inputs']} held-out inputs where its "
            "vote passes, before (base System 1) and after (distilled), paired: "
            f"{agreement['difference'] * 100:+.1f} pts [{agreement['low'] * 100:+.1f}, {agreement['high'] * 100:+.1f}]"
            f", McNemar exact p = {agreement['p_value']:.2g}."
        )
    if metrics["systems"]:
        lines += ["", "| system | accuracy [95% CI] | agrees with System 2 |", "|---|---:|---:|"]
        for system in metrics["systems"]:
            agrees = "reference" if system.get("agreement") is None else format_rate(system["agreement"])
            lines.append(
                f"| {system['system']} | {format_rate(system['accuracy'], system['ci_low'], system['ci_high'])} "
                f"| {agrees} |"
            )
    projection, rate = metrics["projection"], metrics["rate"]
    lines += [
        "",
        f"## The full job: {projection['full_inputs']:,} inputs, projected",
        "",
        f"At the rate measured on {metrics['hardware']} ({rate['replicas']} replica(s)). Another machine, model size "
        "or replica count scales the first two lines; the vote's acceptance carries over only to the same model.",
        "",
        f"- s/input = {rate['arithmetic']}",
        *[f"- {line}" for line in projection["arithmetic"]],
        "",
    ]
    return "\n".join(lines)
