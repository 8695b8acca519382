"""The evaluation report: a Markdown table and a PNG chart (accuracy vs tokens per answer), for one run or several.

`s2d eval` writes `<out>/eval/report.md` and `report.png` from `<out>/eval/metrics.json`; `s2d report OUT [OUT ...]`
renders the same from one or more finished runs (one table, one chart). matplotlib is imported only to draw.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from s2d.engine.core.seeds import seeds_table
from s2d.engine.core.stats import format_difference, format_p, format_rate, wilson_interval
from s2d.engine.data.ownership import ForeignOutput

KIND_STYLE = {  # marker, legend label and point label offset (points; apart, as System 1 and distilled sit close)
    "system1": ("o", "System 1 (base, direct)", (8, 8)),
    "system2": ("s", "System 2 (the method)", (8, 8)),
    "distilled": ("*", "Distilled System 1", (8, -14)),
    "teacher_system1": ("D", "System 1 (teacher, beside a student)", (-58, 8)),  # left: the student S1 sits close
}
SHORT_NAMES = {"system1": "System 1", "system2": "System 2", "distilled": "distilled", "teacher_system1": "teacher S1"}


def short_name(metrics: dict[str, Any], kind: str) -> str:
    """A system's name on the chart: with a student of its own (train.model), its base System 1 says so."""
    return "student S1" if kind == "system1" and metrics.get("student") else SHORT_NAMES[kind]


def model_label(metrics: dict[str, Any]) -> str:
    """The run's model: the teacher, and the student it distilled into when that is another model."""
    student = metrics.get("student")
    return f"{metrics['model']} -> {student}" if student else metrics["model"]


def system_kind(score: dict[str, Any]) -> str:
    """system1 / system2 / distilled; metrics written before `kind` existed are read from the system's name."""
    if score.get("kind") in KIND_STYLE:
        return score["kind"]
    name = score["system"].lower()
    return "distilled" if name.startswith("distilled") else "system2" if name.startswith("system 2") else "system1"


def normalised_systems(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Every system with kind, CI and batched latency filled in (older metrics.json files lack some)."""
    systems = []
    for score in metrics["systems"]:
        kind = system_kind(score)
        samples = int(score.get("samples") or score["total"])
        low, high = wilson_interval(score["accuracy"] * samples, samples)
        latency = score.get("latency_s", (metrics.get("seconds_per_input") or {}).get(kind))
        systems.append(
            {
                **score,
                "kind": kind,
                "ci_low": score.get("ci_low", low),
                "ci_high": score.get("ci_high", high),
                "latency_s": latency,
            }
        )
    return systems


def load_metrics(out: Path) -> dict[str, Any]:
    path = Path(out) / "eval" / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation in {out} ({path} is missing): run `s2d eval` on that job first")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(metrics, dict) or not metrics.get("systems"):
        raise ValueError(f"{path} has no 'systems' to report")
    metrics.setdefault("run", str(out))
    return metrics


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
        base = [c for c in _comparisons(run) if c["measure"] == "accuracy" and c["versus_kind"] == "system1"]
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


def _comparisons(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's paired comparisons, accuracy first (none in metrics written before they existed)."""
    return sorted(metrics.get("comparisons") or [], key=lambda comparison: comparison["measure"] != "accuracy")


def _paired_table(runs: list[dict[str, Any]], with_run: bool) -> list[str]:
    rows = [(metrics, comparison) for metrics in runs for comparison in _comparisons(metrics)]
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


def plot_runs(runs: list[dict[str, Any]], png: Path) -> Path:
    """Accuracy (with its CI) against tokens per answer: one point per system, one colour per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display on a cluster node
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError("the report chart needs matplotlib: pip install matplotlib") from error

    with_agreement = any(score.get("agreement") is not None for metrics in runs for score in metrics["systems"])
    if with_agreement:
        figure, (axes, agreement_axes) = plt.subplots(1, 2, figsize=(13, 5), dpi=120, width_ratios=(3, 2))
    else:
        figure, axes = plt.subplots(figsize=(7.5, 5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tokens = []
    for index, metrics in enumerate(runs):
        colour = colours[index % len(colours)]
        label = f"{metrics['run']}: {metrics['task']} / {metrics['method']}"
        for score in normalised_systems(metrics):
            marker, _, offset = KIND_STYLE[score["kind"]]
            accuracy = 100 * score["accuracy"]
            error = [[accuracy - 100 * score["ci_low"]], [100 * score["ci_high"] - accuracy]]
            axes.errorbar(
                score["tokens_per_answer"],
                accuracy,
                yerr=error,
                fmt=marker,
                color=colour,
                capsize=4,
                markersize=12 if marker == "*" else 8,
                label=label,
            )
            label = None  # one legend entry per run
            if score["kind"] == "distilled":
                _plot_seeds(axes, score["tokens_per_answer"], (metrics.get("seeds") or {}).get("accuracy"), colour)
            name = short_name(metrics, score["kind"]) + (" (majority)" if "majority" in score["system"] else "")
            axes.annotate(
                name,
                (score["tokens_per_answer"], accuracy),
                textcoords="offset points",
                xytext=offset,
                fontsize=8,
                color=colour,
            )
            tokens.append(score["tokens_per_answer"])
    present = {score["kind"] for metrics in runs for score in normalised_systems(metrics)}
    for kind, (marker, text, _) in KIND_STYLE.items():
        if kind in present:
            axes.plot([], [], marker, color="grey", label=text)
    if tokens and min(tokens) > 0 and max(tokens) / min(tokens) > 8:
        axes.set_xscale("log")  # System 2 with many samples costs orders of magnitude more tokens
    else:
        axes.set_xlim(left=0)
    axes.set_xlabel("generated tokens per answer (reasoning and all samples included)")
    axes.set_ylabel("accuracy, % (bars: 95% interval, the input as the unit)")
    axes.set_ylim(-10, 105)
    axes.set_title("Accuracy vs tokens per answer")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    _annotate_paired(axes, runs, "accuracy")
    if with_agreement:
        _plot_agreement(agreement_axes, runs, colours)
        _annotate_paired(agreement_axes, runs, "agreement")
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)
    plt.close(figure)
    return png


def _plot_seeds(axes: Any, x: float, summary: dict[str, Any] | None, colour: str) -> None:
    """eval.seeds: each seed's value as a dot just right of the distilled point (an offset in points, whatever the
    axis' scale), joined by a min-max line and labelled with the range."""
    if not summary or summary.get("count", 0) < 2:
        return
    from matplotlib.transforms import offset_copy

    beside = offset_copy(axes.transData, fig=axes.figure, x=10, units="points")
    values = [100 * value for value in summary["values"]]
    axes.plot([x, x], [min(values), max(values)], color=colour, linewidth=1, alpha=0.6, transform=beside)
    axes.plot([x] * len(values), values, "o", color=colour, markersize=3, alpha=0.8, transform=beside)
    axes.annotate(
        f"{len(values)} seeds: {min(values):.0f}-{max(values):.0f}%",
        (x, max(values)),
        textcoords="offset points",
        xytext=(14, 2),
        fontsize=7,
        color=colour,
    )


def _annotate_paired(axes: Any, runs: list[dict[str, Any]], measure: str) -> None:
    """The paired comparisons of `measure` as a text box in the panel's top-left corner."""
    lines = []
    for metrics in runs:
        for comparison in _comparisons(metrics):
            if comparison["measure"] == measure:
                versus = short_name(
                    metrics, system_kind({"system": comparison["versus"], "kind": comparison["versus_kind"]})
                )
                versus += " (majority)" if "majority" in comparison["versus"] else ""
                prefix = f"{metrics['run']}: " if len(runs) > 1 else ""
                lines.append(
                    f"{prefix}distilled - {versus}: {format_difference(comparison)}, "
                    f"McNemar p = {format_p(comparison['p_value'])}"
                )
    if lines:
        low, high = axes.get_ylim()
        axes.set_ylim(low, high + 6 * (len(lines) + 1))  # headroom: the box never covers a point or a bar
        axes.set_yticks(range(0, 101, 20))
        axes.text(
            0.02,
            0.98,
            "paired, same inputs:\n" + "\n".join(lines),
            transform=axes.transAxes,
            fontsize=7,
            va="top",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "grey"},
        )


def _plot_agreement(axes: Any, runs: list[dict[str, Any]], colours: list[str]) -> None:
    """Agreement with System 2's majority answer: one bar per system that has it, grouped by run."""
    labels, position = [], 0
    for index, metrics in enumerate(runs):
        for score in normalised_systems(metrics):
            if score.get("agreement") is None:
                continue
            value = 100 * score["agreement"]
            error = [[value - 100 * score["agreement_low"]], [100 * score["agreement_high"] - value]]
            axes.bar(
                position,
                value,
                yerr=error,
                capsize=4,
                color=colours[index % len(colours)],
                hatch="//" if score["kind"] == "distilled" else None,
                edgecolor="black",
                linewidth=0.5,
            )
            axes.annotate(f"{value:.0f}%", (position, value), textcoords="offset points", xytext=(-18, 4), fontsize=8)
            if score["kind"] == "distilled":
                _plot_seeds(axes, position + 0.2, (metrics.get("seeds") or {}).get("agreement"), "black")
            labels.append(
                (position, short_name(metrics, score["kind"]) + (f"\n{metrics['run']}" if len(runs) > 1 else ""))
            )
            position += 1
        position += 0.5  # a gap between runs
    axes.set_xticks([p for p, _ in labels], [label for _, label in labels], fontsize=7)
    axes.set_ylabel("agrees with System 2's majority answer, % (95% CI)")
    axes.set_ylim(0, 105)
    axes.set_title("What distillation transfers")
    axes.grid(alpha=0.3, axis="y")


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
