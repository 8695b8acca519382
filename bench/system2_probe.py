"""Is System 2 better than System 1 on this model? Every task x method pairing, measured the same way.

    .venv/bin/python bench/system2_probe.py --md probe.md         # ~12 minutes on 2 cores
    .venv/bin/python bench/system2_probe.py --pairings last_letter_one:cot_fewshot --inputs 32
    .venv/bin/python bench/system2_probe.py --pairings sycophancy:s2a:36   # task:method[:most inputs]

For each pairing, on the task's held-out (eval) inputs: System 1 (the direct prompt the distilled model
learns) and System 2 (the method), each greedy (one answer at temperature 0) and as the plurality answer of
n samples (ties and unparseable majorities count as wrong), with Wilson 95% intervals. Both systems' answers
go through the same extractor and the task's normaliser, so neither gets a more lenient reading. System 1 is
measured once per task and shared by its pairings. No Ray: one vLLM engine (s2d's CPU settings) in this
process, driven through s2d's own prompt programs (`s2d.engine.core.program.run_method`).

The last lines are the table; `--md FILE` also writes it as Markdown (docs/results.md includes it).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (task, method): the paper's pairings zero-shot, then few-shot chain of thought where the task has exemplars.
# Left to `make paper`'s job rows, which measure System 1 and System 2 on held-out inputs too: bsm x
# pairwise_judge (six calls per sample) and 2-step RaR (two calls per sample: 5 of the probe's 17 minutes,
# which kept `make paper` over its hour); `--pairings last_letter:rar2,coin_flip:rar2` still runs them here.
PAIRINGS = (
    ("last_letter", "rar1"),
    ("last_letter", "cot_fewshot"),
    ("last_letter_one", "rar1"),
    ("last_letter_one", "cot"),
    ("last_letter_one", "cot_fewshot"),
    ("coin_flip", "rar1"),
    ("coin_flip", "cot_fewshot"),
    ("arithmetic", "cot"),
    ("arithmetic", "cot_fewshot"),
    ("sycophancy", "s2a", 36),  # its held-out set has 36 questions x distractors
)


@dataclass(frozen=True)
class Row:
    task: str
    method: str
    inputs: int
    system1_greedy: object  # s2d.engine.core.scoring.SystemScore
    system1_majority: object
    system2_greedy: object
    system2_majority: object
    system2_tokens: float


def _pct(score) -> str:
    return f"{score.accuracy:.0%} [{score.ci_low:.0%}, {score.ci_high:.0%}]"


def _significant(better, worse) -> bool:
    return better.ci_low > worse.ci_high


def run_probe(pairings, inputs: int, n: int, temperature: float, max_tokens: int, seed: int) -> list[Row]:
    from s2d.actors.vllm_backend import VLLMGenerator
    from s2d.cluster.resources import cpu_thread_env
    from s2d.engine.core.criteria import input_context
    from s2d.engine.core.methods import get_method
    from s2d.engine.core.program import SamplingRequest, run_method
    from s2d.engine.core.scoring import score_majority, score_single
    from s2d.engine.core.spec import EngineSpec
    from s2d.engine.core.tasks import get_task
    from s2d.engine.data.models import resolve_model

    os.environ.update(cpu_thread_env(1, os.cpu_count() or 1))
    generator = VLLMGenerator.load(resolve_model("smollm2-135m"), EngineSpec(), seed)
    greedy = SamplingRequest(n=1, temperature=0.0, max_tokens=max_tokens)
    sampled = SamplingRequest(n=n, temperature=temperature, max_tokens=max_tokens)
    system1_by_task: dict[str, tuple] = {}
    rows = []
    try:
        for task_name, method_name, *cap in pairings:
            started = time.monotonic()
            task, method = get_task(task_name), get_method(method_name)
            try:
                items = task.generate(min(inputs, *cap) if cap else inputs, seed, "eval")
            except ValueError as error:  # a task with fewer held-out inputs: the other pairings still run
                print(f"probe: {task_name} x {method_name}: skipped ({error})", flush=True)
                continue
            contexts = [input_context(task, item) for item in items]
            if task_name not in system1_by_task:
                direct = get_method("system1")
                system1_by_task[task_name] = (
                    score_single(
                        "System 1 greedy", "system1", task_name, items, run_method(generator, direct, contexts, greedy)
                    ),
                    score_majority(
                        f"System 1 majority of {n}", task_name, items, run_method(generator, direct, contexts, sampled)
                    ),
                )
            s2_greedy = score_single(
                "System 2 greedy",
                "system2",
                task_name,
                items,
                run_method(generator, method, contexts, greedy),
                method.extractor,
            )
            s2_chains = run_method(generator, method, contexts, sampled)
            s2_majority = score_majority(f"System 2 majority of {n}", task_name, items, s2_chains, method.extractor)
            rows.append(
                Row(
                    task_name,
                    method_name,
                    len(items),
                    *system1_by_task[task_name],
                    s2_greedy,
                    s2_majority,
                    s2_majority.tokens_per_answer / n,
                )
            )
            print(
                f"probe: {task_name} x {method_name}: System 1 {_pct(system1_by_task[task_name][1])}, "
                f"System 2 {_pct(s2_majority)} (majority of {n}) in {time.monotonic() - started:.0f} s",
                flush=True,
            )
    finally:
        generator.unload()
    return rows


def render_table(rows: list[Row], n: int) -> str:
    lines = [
        f"| task | method | inputs | System 1 greedy | System 1 majority of {n} | System 2 greedy | "
        f"System 2 majority of {n} | System 2 tokens per sample | System 2 significantly better? |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        best1 = max(row.system1_greedy, row.system1_majority, key=lambda s: s.accuracy)
        best2 = max(row.system2_greedy, row.system2_majority, key=lambda s: s.accuracy)
        verdict = "**yes**" if _significant(best2, best1) else "worse" if _significant(best1, best2) else "no"
        lines.append(
            f"| {row.task} | {row.method} | {row.inputs} | {_pct(row.system1_greedy)} | "
            f"{_pct(row.system1_majority)} | {_pct(row.system2_greedy)} | {_pct(row.system2_majority)} | "
            f"{row.system2_tokens:.0f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairings", help="comma-separated task:method (default: every pairing in PAIRINGS)")
    parser.add_argument("--inputs", type=int, default=64, help="held-out inputs per pairing")
    parser.add_argument("--n", type=int, default=8, help="samples for the majority answers")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--md", type=Path, help="also write the table (with its settings) to this Markdown file")
    args = parser.parse_args()
    pairings = [tuple(p.split(":")) for p in args.pairings.split(",")] if args.pairings else list(PAIRINGS)
    pairings = [(task, method, *(int(cap) for cap in caps)) for task, method, *caps in pairings]
    started = time.monotonic()
    rows = run_probe(pairings, args.inputs, args.n, args.temperature, args.max_tokens, args.seed)
    table = render_table(rows, args.n)
    settings = (
        f"{args.inputs} held-out inputs per pairing, n={args.n} at temperature {args.temperature}, "
        f"max_tokens {args.max_tokens}, seed {args.seed}; {time.monotonic() - started:.0f} s"
    )
    print(settings)
    print(table)
    if args.md:
        args.md.write_text(f"<!-- written by bench/system2_probe.py -->\n{settings}\n\n{table}\n")


if __name__ == "__main__":
    main()
