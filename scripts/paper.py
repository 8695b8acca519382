"""Regenerate docs/results.md: the paper's table, measured with s2d on this machine (`make paper`).

    .venv/bin/python scripts/paper.py               # every pairing below, then the probe; <= 60 min on 2 cores
    .venv/bin/python scripts/paper.py --only demo --skip-probe   # one pairing; the others keep their last runs
    .venv/bin/python scripts/paper.py --only "" --skip-probe     # rewrite the page from the runs on disk

Each pairing is one job file of configs/, run as a user runs it (`s2d run FILE out=runs/paper/NAME`), at the
sizes the file holds. The System 2 probe (bench/system2_probe.py) adds System 1 vs System 2 for every task x
method, zero-shot and few-shot, without training. The generated part of docs/results.md sits between two
markers; the text around it (what was tried, what the numbers mean) is kept as written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "paper"
RESULTS = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- paper:begin (written by scripts/paper.py) -->", "<!-- paper:end -->"

# (name, job file, the paper's experiment, the paper's numbers for Llama-2-70B-chat: System 1 / System 2 / distilled).
PAIRINGS = (
    ("rar1_last_letter", "configs/rar1_last_letter.yaml", "RaR, last letter (k=4)", None),
    ("rar2_last_letter", "configs/rar2_last_letter.yaml", "RaR, last letter (k=4)", None),
    ("rar1_coin_flip", "configs/rar1_coin_flip.yaml", "RaR, coin flip", None),
    ("rar2_coin_flip", "configs/rar2_coin_flip.yaml", "RaR, coin flip", None),
    ("s2a_sycophancy", "configs/s2a_sycophancy.yaml", "S2A, TriviaQA with the user's opinion", None),
    ("bsm_pairwise_judge", "configs/bsm_pairwise_judge.yaml", "BSM, pairwise judge (OASST2 / MT-bench)", None),
    ("cot_arithmetic", "configs/cot_arithmetic.yaml", "CoT, GSM8k (arithmetic)", None),
    ("cot_arithmetic_usc", "configs/cot_arithmetic_usc.yaml", "CoT, arithmetic, universal self-consistency", None),
    ("cot_multiple_choice_shuffle", "configs/cot_multiple_choice_shuffle.yaml", "CoT, options reordered", None),
    ("demo", "configs/demo.yaml", "the demo: few-shot CoT, last letter of one word", None),
)
PROBE_ARGS = ("--inputs", "64", "--n", "8")
# Pairings trained with several seeds (`s2d run --seeds K`): their distilled cells add the spread across seeds. The
# demo moves most from run to run (distilled 19-29% over runs, base 8%), and 2 more fine-tunes cost it ~4 minutes.
SEEDS = {"demo": 3}


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    bf16 = (
        "AVX-512 with bf16"
        if "avx512_bf16" in flags or "amx_bf16" in flags
        else "AVX-512, no bf16"
        if "avx512f" in flags
        else "AVX2"
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu} ({bf16}), {os.cpu_count()} cores, {memory:.0f} GiB, no GPU"


def run_pairing(name: str, job: str) -> dict:
    """`s2d run` of one job file; its log in runs/paper/NAME.log. A failure is recorded, not raised."""
    out = RUNS / name
    RUNS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(RUNS / f"{name}.log", "w") as log:
        code = subprocess.call(
            [str(ROOT / ".venv" / "bin" / "s2d"), "run", job, f"out={out}", "--force", *_seeds_flag(name)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    seconds = time.monotonic() - started
    generate = out / "metrics.json"
    # A job whose vote passed no input stops before training: a result of the pairing, not a failure of s2d.
    nothing = code != 0 and generate.is_file() and json.loads(generate.read_text()).get("committed_accepted") == 0
    outcome = "ok" if code == 0 else "nothing to distil" if nothing else f"failed (exit {code}), see {out}.log"
    print(f"paper: {name}: {outcome} in {seconds:.0f} s", flush=True)
    return {"name": name, "exit": code, "seconds": round(seconds), "nothing_to_distil": nothing}


def _seeds_flag(name: str) -> list[str]:
    return ["--seeds", str(SEEDS[name])] if SEEDS.get(name, 1) > 1 else []


def collect(name: str, job: str, experiment: str, paper: dict | None, run: dict | None) -> dict:
    out = RUNS / name
    row = {"name": name, "job": job, "experiment": experiment, "paper": paper, "run": run}
    for key, path in (
        ("eval", out / "eval" / "metrics.json"),
        ("generate", out / "metrics.json"),
        ("train", out / "model" / "train_metrics.json"),
    ):
        row[key] = json.loads(path.read_text()) if path.is_file() else None
    return row


def _cell(score: dict | None, field: str = "accuracy") -> str:
    if not score or score.get(field) is None:
        return "n/a"
    low, high = (
        (score["ci_low"], score["ci_high"])
        if field == "accuracy"
        else (score["agreement_low"], score["agreement_high"])
    )
    return f"{score[field]:.0%} [{low:.0%}, {high:.0%}]"


def _spread(metrics: dict, field: str) -> str:
    """'; 3 seeds: 24% (21-26%)' where the run trained several seeds (eval.seeds), else ''."""
    seeds = metrics.get("seeds") or {}
    found = seeds.get(field)
    if seeds.get("count", 0) < 2 or not found:
        return ""
    return f"; {found['count']} seeds: {found['mean']:.0%} ({100 * found['low']:.0f}-{found['high']:.0%})"


def _systems(metrics: dict) -> dict[str, dict]:
    found = {}
    for score in metrics["systems"]:
        key = score["kind"] + ("_majority" if "majority" in score["system"] else "")
        found[key] = score
    return found


def render(rows: list[dict], probe: str | None, total_seconds: float | None) -> str:
    missing = [row["name"] for row in rows if not row["run"]] + ([] if probe else ["the probe"])
    cost = (
        f"`make paper`'s jobs and probe took {total_seconds / 60:.0f} min in all."
        if not missing
        else f"the parts run took {total_seconds / 60:.0f} min; not run yet: {', '.join(missing)}."
    )
    lines = [
        f"Measured {date.today().isoformat()} on {machine()}; {cost}",
        "Model: SmolLM2-135M-Instruct (the packaged model) for every row. Accuracy and agreement with System 2 "
        "carry their 95% Wilson intervals; tokens are generated tokens per answer (all steps, one sample). "
        "A pairing trained with several seeds (`--seeds`: "
        + ", ".join(f"{name} {count}" for name, count in SEEDS.items())
        + ") shows seed 0's distilled figures and, after them, the seeds' mean (min-max).",
        "",
        "| pairing | held-out | accepted / inputs | System 1 | System 2, one sample | System 2, majority | "
        "distilled System 1 | agreement with System 2: System 1 → distilled | tokens: System 1 / System 2 / distilled "
        "| job time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row["eval"]:
            lines.append(f"| {row['name']} | {_why_no_eval(row)} |||||||||")
            continue
        systems = _systems(row["eval"])
        s1, s2, s2m, distilled = (systems.get(k) for k in ("system1", "system2", "system2_majority", "distilled"))
        generate = row["generate"] or {}
        accepted = f"{generate.get('committed_accepted', 'n/a')} / {generate.get('total_inputs', 'n/a')}"
        tokens = " / ".join(f"{s['tokens_per_answer']:.0f}" if s else "n/a" for s in (s1, s2, distilled))
        seconds = f"{row['run']['seconds'] / 60:.1f} min" if row["run"] else "n/a"
        lines.append(
            f"| {row['name']} | {row['eval']['eval_inputs']} | {accepted} | {_cell(s1)} | {_cell(s2)} | "
            f"{_cell(s2m)} | {_cell(distilled)}{_spread(row['eval'], 'accuracy')} "
            f"| {_cell(s1, 'agreement')} → {_cell(distilled, 'agreement')}{_spread(row['eval'], 'agreement')} "
            f"| {tokens} | {seconds} |"
        )
    lines += ["", "![accuracy vs tokens per answer, and agreement with System 2](results.png)"]
    if probe:
        lines += ["", "### System 1 vs System 2 without training (bench/system2_probe.py)", "", probe.strip()]
    return "\n".join(lines) + "\n"


def _why_no_eval(row: dict) -> str:
    """A row without an evaluation: not run, nothing accepted to distil (a result), or a failure (see its log)."""
    generate = row["generate"] or {}
    if not row["run"]:
        return "not run"
    if generate and generate.get("committed_accepted") == 0:
        reasons = ", ".join(f"{reason} {count}" for reason, count in generate.get("rejected_by_reason", {}).items())
        return (
            f"nothing to distil: 0 of {generate.get('total_inputs')} inputs passed the vote ({reasons}); "
            f"runs/paper/{row['name']}.log"
        )
    return f"failed, see runs/paper/{row['name']}.log"


def write_results(body: str) -> None:
    text = RESULTS.read_text() if RESULTS.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help='comma-separated pairing names to rerun (the others keep their last runs; "" reruns none)'
    )
    parser.add_argument("--skip-probe", action="store_true", help="keep the last probe table")
    args = parser.parse_args()
    chosen = set(filter(None, args.only.split(","))) if args.only is not None else {name for name, *_ in PAIRINGS}
    unknown = chosen - {name for name, *_ in PAIRINGS}
    if unknown:
        parser.error(f"unknown pairings {sorted(unknown)}; known: {[name for name, *_ in PAIRINGS]}")
    started = time.monotonic()
    runs_file = RUNS / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    for name, job, *_ in PAIRINGS:
        if name in chosen:
            runs[name] = run_pairing(name, job)
            runs_file.write_text(json.dumps(runs, indent=2))
    probe_file = RUNS / "probe.md"
    if not args.skip_probe:
        probe_started = time.monotonic()
        with open(RUNS / "probe.log", "w") as log:
            code = subprocess.call(
                [sys.executable, str(ROOT / "bench" / "system2_probe.py"), *PROBE_ARGS, "--md", str(probe_file)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        runs["probe"] = {"name": "probe", "exit": code, "seconds": round(time.monotonic() - probe_started)}
        runs_file.write_text(json.dumps(runs, indent=2))
        print(f"paper: probe {'ok' if code == 0 else f'failed, see {RUNS}/probe.log'}", flush=True)
    rows = [collect(name, job, experiment, paper, runs.get(name)) for name, job, experiment, paper in PAIRINGS]
    from s2d.engine.stages.report import write_report

    finished = [RUNS / row["name"] for row in rows if row["eval"]]
    if finished:
        write_report(finished, to=RUNS / "chart")
        (ROOT / "docs" / "results.png").write_bytes((RUNS / "chart" / "report.png").read_bytes())
    probe = probe_file.read_text() if probe_file.is_file() else None
    # The whole page's cost: every part's own measured time, also when parts were rerun separately (--only)
    write_results(render(rows, probe, sum(run["seconds"] for run in runs.values())))
    print(
        f"paper: wrote {RESULTS.relative_to(ROOT)} and docs/results.png in {(time.monotonic() - started) / 60:.0f} min"
    )
    done = [runs.get(name, {}) for name in chosen]
    return 0 if all(run.get("exit") == 0 or run.get("nothing_to_distil") for run in done) else 1


if __name__ == "__main__":
    sys.exit(main())
