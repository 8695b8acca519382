"""Two distilled adapters of one student, paired on the same held-out inputs: accuracy of each (Wilson, the input as
the unit), their difference (Newcombe's interval for paired proportions) and the exact McNemar p. Both adapters run
greedy direct answers on one engine of the student's base. For a mixture job (`train.data`), each source's held-out
inputs in turn. Used for docs/results.md's rounds and mixture rows (issue 24):

    s2d-timed .venv/bin/python bench/paired_adapters.py runs/rounds/round-1/job.yaml \\
        "round 1=runs/rounds/round-1/model" "round 2=runs/rounds/round-2/model"
    s2d-timed .venv/bin/python bench/paired_adapters.py mix.yaml "demo alone=runs/demo/model" "mixture=runs/mix/model"

The second adapter is the one compared against the first (difference = second - first). Prints one JSON line per
held-out set.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from s2d.engine.core.criteria import input_context
from s2d.engine.core.program import SamplingRequest
from s2d.engine.core.scoring import single_outcomes
from s2d.engine.core.spec import load_spec
from s2d.engine.core.stats import clustered_interval, paired_comparison
from s2d.engine.core.tasks import get_task
from s2d.engine.data.mixture import check_sources, source_eval_spec
from s2d.engine.stages.eval_systems import ReplicaPlan, SystemRun, adapter_rank, run_plans
from s2d.engine.stages.evaluate import held_out_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="the job file whose held-out inputs (and student) are used")
    parser.add_argument("adapters", nargs=2, metavar="NAME=PATH", help="the two adapters, first then second")
    args = parser.parse_args()
    spec = load_spec(args.job)
    adapters = dict(entry.split("=", 1) for entry in args.adapters)
    first, second = adapters
    rank = max(adapter_rank(path) for path in adapters.values())
    evaluated = [source_eval_spec(spec, source) for source in check_sources(spec)] if spec.train.data else [spec]
    jobs, held_out = [], []
    for job in evaluated:
        inputs = held_out_inputs(job)
        contexts = [input_context(get_task(job.task.name), item) for item in inputs]
        direct = SamplingRequest(n=1, temperature=0.0, max_tokens=job.eval.max_tokens)
        runs = tuple(SystemRun(name, "system1", direct, path) for name, path in adapters.items())
        jobs.append((job, [ReplicaPlan(spec.student, rank, runs)], contexts))
        held_out.append((job.task.name, inputs))
    for (task, inputs), (chains, _, _) in zip(held_out, run_plans(jobs)):
        outcomes = {name: single_outcomes(task, inputs, chains[name]) for name in adapters}
        hits = {name: {key: right > 0 for key, (right, _) in found.items()} for name, found in outcomes.items()}
        print(
            json.dumps(
                {
                    "task": task,
                    "inputs": len(inputs),
                    "accuracy": {name: asdict(clustered_interval(found.values())) for name, found in outcomes.items()},
                    f"{second} - {first}": asdict(paired_comparison(hits[second], hits[first])),
                }
            )
        )


if __name__ == "__main__":
    main()
