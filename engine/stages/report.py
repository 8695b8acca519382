"""The evaluation report: a Markdown table and a PNG chart (accuracy vs tokens per answer), for one run or several.

`s2d eval` writes `<out>/eval/report.md` and `report.png` from `<out>/eval/metrics.json`; `s2d report OUT [OUT ...]`
renders the same from one or more finished runs (one table, one chart: engine/stages/chart.py), each run's
metrics read through engine/stages/eval_metrics.py.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from s2d.engine.core.seeds import seeds_table
from s2d.engine.core.stats import format_difference, format_p, format_rate
from s2d.engine.data.ownership import ForeignOutput
from s2d.engine.stages.chart import plot_runs
from s2d.engine.stages.eval_metrics import comparisons, load_metrics, model_label, normalised_systems


def _agreement(score: dict[str, Any]) -> str:
    if score.get("agreement") is None:
        return "reference" if score["kind"] == "system2" and "majority" in score["system"] else "n/a"
    return format_rate(score["agreement"], score["agreement_low"], score["agreement_high"])


def _row(score: dict[str, Any]) -> str:
    latency = "n/a" if score["latency_s"] is None else f"{score['latency_s'] * 1000:.0f} ms"
    return (
        f"{format_rate(score['accuracy'], score['ci_low'], score['ci_high'])} "
        f"| {score['correct']:g} / {score['total']} | {_agreement(score)} | {score['tokens_per_answer']:.1f} "
        f"| {latency}"
    )


NOTES = (
    "Accuracy with its 95% confidence interval, the held-out input as the unit: Wilson's interval for one answer per "
    "input; for System 2's mean over n samples (one input's samples are correlated), Wilson's at the effective "
    "sample size, answers / design effect estimated between inputs (Korn & Graubard 1998). Agreement with System 2: "
    "the share of a system's answers equal to System 2's majority answer, over the held-out inputs where System 2's "
    "own samples pass the job's vote (what distillation teaches System 1, right or wrong), with the same intervals. "
    "Tokens per answer count every generated token, reasoning and all samples included. Latency per answer is "
    "batched: the wall time of generating the whole held-out set for that system on one replica, divided by the "
    "number of inputs (not the latency of a lone request)."
)
PAIRED_NOTES = (
    "Paired comparisons: the same held-out inputs under both systems, matched by input id. The difference of the "
    "two rates in percentage points with Newcombe's 95% interval for paired proportions (1998, method 10), and the "
    "exact two-sided McNemar p-value, from the inputs where only one of the two is right (or agrees)."
)
_COLUMNS = (
    "accuracy [95% CI] | correct / total | agrees with System 2 [95% CI] | tokens per answer | latency per answer"
)


def render_report(
    metrics: dict[str, Any], chart: str | None = "report.png", title: str = "#", notes: bool = True
) -> str:
    """One run's report.md (`title`: its heading's level; `notes`: with the notes on the columns)."""
    lines = [
        f"{title} s2d evaluation: {metrics['task']} / {metrics['method']} / {model_label(metrics)}",
        "",
        f"{metrics['eval_inputs']} held-out inputs (disjoint from the distillation inputs){_reference(metrics)}."
        + (f" {NOTES}" if notes else ""),
        "",
        f"| system | {_COLUMNS} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {score['system']} | {_row(score)} |" for score in normalised_systems(metrics)]
    lines += seeds_table([metrics], with_run=False)
    lines += _paired_table([metrics], with_run=False)
    if chart:
        lines += ["", f"![accuracy vs tokens per answer]({chart})"]
    return "\n".join(lines) + "\n"


def render_mixture_report(metrics: dict[str, Any], chart: str | None = "report.png") -> str:
    """A mixture's report.md: the one student on each source's own held-out inputs, a summary row per source
    (distilled against the student's base, paired), then each source's section as a single-source report has it."""
    sources = metrics["sources"]
    lines = [
        f"# s2d evaluation: a mixture of {len(sources)} sources / {model_label(metrics)}",
        "",
        f"One student, trained once on the weighted union of the sources' accepted pairs (`{metrics['run']}/model`), "
        f"evaluated on each source job's own held-out inputs, with that job's task and method; its model is the "
        f"teacher there. {NOTES}",
        "",
        "| source | task / method | weight | examples per epoch | distilled accuracy | versus student base, paired "
        "| McNemar exact p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in sources:
        source = run.get("source") or {}
        distilled = [score for score in normalised_systems(run) if score["kind"] == "distilled"]
        base = [c for c in comparisons(run) if c["measure"] == "accuracy" and c["versus_kind"] == "system1"]
        accuracy = f"{distilled[0]['accuracy']:.1%}" if distilled else "n/a"
        paired = (format_difference(base[0]), format_p(base[0]["p_value"])) if base else ("n/a", "n/a")
        weight = f"{source['weight']:g}" if source.get("weight") is not None else "n/a"
        lines.append(
            f"| {run['run']} | {run['task']} / {run['method']} | {weight} "
            f"| {source.get('examples', 'n/a')} | {accuracy} | {paired[0]} | {paired[1]} |"
        )
    for index, run in enumerate(sources, start=1):
        lines += ["", f"## Source {index}: {run['run']}", ""]
        lines.append(render_report(run, chart=None, title="###", notes=False).rstrip())
    if chart:
        lines += ["", f"![accuracy vs tokens per answer, one colour per source]({chart})"]
    return "\n".join(lines) + "\n"


def expand_mixtures(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs with each mixture replaced by its sources (one row group per source, named `mixture <- source`)."""
    expanded = []
    for metrics in runs:
        if not metrics.get("sources"):
            expanded.append(metrics)
            continue
        expanded += [source | {"run": f"{metrics['run']} <- {source['run']}"} for source in metrics["sources"]]
    return expanded


def _paired_table(runs: list[dict[str, Any]], with_run: bool) -> list[str]:
    rows = [(metrics, comparison) for metrics in runs for comparison in comparisons(metrics)]
    if not rows:
        return []
    lines = [
        "",
        PAIRED_NOTES,
        "",
        ("| run " if with_run else "")
        + "| measure | system | versus | inputs | difference [95% CI] | only the system / only versus "
        + "| McNemar exact p |",
        ("|---" if with_run else "") + "|---|---|---|---:|---:|---:|---:|",
    ]
    for metrics, comparison in rows:
        lines.append(
            (f"| {metrics['run']} " if with_run else "")
            + f"| {comparison['measure']} | {comparison['system']} | {comparison['versus']} | {comparison['inputs']} "
            f"| {format_difference(comparison)} | {comparison['first_only']} / {comparison['second_only']} "
            f"| {format_p(comparison['p_value'])} |"
        )
    return lines


def _reference(metrics: dict[str, Any]) -> str:
    reference = metrics.get("agreement_reference")
    if not reference:
        return ""
    return (
        f"; System 2's vote (n={metrics['samples_for_system2']}, threshold {reference['threshold']:g}) "
        f"gives a reference answer on {reference['inputs']} of them"
    )


def render_comparison(runs: list[dict[str, Any]], chart: str | None = "report.png") -> str:
    """Several runs in one table: one row per run and system."""
    lines = [
        f"# s2d evaluation: {len(runs)} runs",
        "",
        NOTES,
        "",
        f"| run | task | method | model | system | {_COLUMNS} |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for metrics in runs:
        for score in normalised_systems(metrics):
            lines.append(
                f"| {metrics['run']} | {metrics['task']} | {metrics['method']} | {model_label(metrics)} "
                f"| {score['system']} | {_row(score)} |"
            )
    lines += seeds_table(runs, with_run=True)
    lines += _paired_table(runs, with_run=True)
    if chart:
        lines += ["", f"![accuracy vs tokens per answer]({chart})"]
    return "\n".join(lines) + "\n"


REPORT_MARKER = ".s2d-report.json"  # in a --to folder: s2d's report is there, so s2d may rewrite it


def write_report(outs: list[Path], to: Path | None = None) -> tuple[Path, Path]:
    """report.md + report.png for one run (in `<out>/eval/` unless `to`) or a comparison of several (in `to`).
    A `to` folder must be new, empty, or one a report was written to before: a user's folder is refused with one
    line (ForeignOutput), whatever it holds. Each file is written beside and renamed over: never half a report."""
    if not outs:
        raise ValueError("name at least one run directory")
    runs = [load_metrics(Path(out)) for out in outs]
    if to is None:
        if len(runs) > 1:
            raise ValueError("comparing several runs needs --to DIR for the table and chart")
        to = Path(outs[0]) / "eval"  # the output's own eval folder, s2d's
    else:
        claim_report_folder(Path(to))
    to = Path(to)
    if len(runs) == 1 and runs[0].get("sources"):
        markdown, runs = render_mixture_report(runs[0]), runs[0]["sources"]
    else:
        runs = expand_mixtures(runs)
        markdown = render_report(runs[0]) if len(runs) == 1 else render_comparison(runs)
    token = uuid.uuid4().hex[:8]
    png, report = to / "report.png", to / "report.md"
    staged_png, staged_report = to / f".report.{token}.tmp.png", to / f".report.{token}.tmp.md"
    try:
        plot_runs(runs, staged_png)
        staged_report.write_text(markdown)
        os.replace(staged_png, png)
        os.replace(staged_report, report)
    finally:
        staged_png.unlink(missing_ok=True)
        staged_report.unlink(missing_ok=True)
    return report, png


def claim_report_folder(to: Path) -> None:
    if to.is_dir() and not (to / REPORT_MARKER).is_file() and any(to.iterdir()):
        raise ForeignOutput(
            f"--to {to} is a folder that holds files and no report of s2d's ({REPORT_MARKER}): choose a new or "
            "empty folder"
        )
    if to.exists() and not to.is_dir():
        raise ForeignOutput(f"--to {to} is a file, not a folder")
    to.mkdir(parents=True, exist_ok=True)
    (to / REPORT_MARKER).write_text(json.dumps({"format": "s2d-report", "version": 1}))
