"""The evaluation chart, report.png: accuracy (with its interval) against tokens per answer, one point per system
and one colour per run, and, where the runs have it, agreement with System 2's majority answer beside it.

matplotlib is imported only to draw (engine/stages/report.py writes the chart with the Markdown report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from s2d.engine.core.stats import format_difference, format_p
from s2d.engine.stages.eval_metrics import comparisons, normalised_systems, short_name, system_kind

KIND_STYLE = {  # marker, legend label and point label offset (points; apart, as System 1 and distilled sit close)
    "system1": ("o", "System 1 (base, direct)", (8, 8)),
    "system2": ("s", "System 2 (the method)", (8, 8)),
    "distilled": ("*", "Distilled System 1", (8, -14)),
    "teacher_system1": ("D", "System 1 (teacher, beside a student)", (-58, 8)),  # left: the student S1 sits close
}


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
        for comparison in comparisons(metrics):
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
