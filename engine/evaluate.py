"""Evaluation on held-out inputs: System 1 (base, direct), System 2 (the method), distilled System 1 (base + adapter).

One replica actor with LoRA enabled serves all three, so the engine starts once. System 2 is
reported two ways from the same samples: majority vote over n (what curation trusts) and the mean
single-sample accuracy (what one System 2 call costs).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from engine.curate import majority_vote, sample_answers
from engine.program import Chain, SamplingRequest
from engine.spec import JobSpec
from engine.tasks import TaskInput, get_task


@dataclass(frozen=True)
class SystemScore:
    system: str
    accuracy: float
    correct: float
    total: int
    tokens_per_answer: float  # generated tokens per answer, all steps of all samples that made it


def score_single(name: str, task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]]) -> SystemScore:
    """Mean accuracy over every sample (for n=1, plain accuracy)."""
    correct, samples, tokens = 0, 0, 0
    for item, per_input in zip(inputs, chains):
        answers = sample_answers(task, [chain.final_text for chain in per_input])
        correct += sum(answer == item.label for answer in answers)
        samples += len(per_input)
        tokens += sum(chain.num_tokens for chain in per_input)
    accuracy = correct / samples
    return SystemScore(name, accuracy, accuracy * len(inputs), len(inputs), tokens / samples)


def score_majority(name: str, task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]]) -> SystemScore:
    """Accuracy of the majority answer (threshold 0: plurality, ties count as wrong); tokens of all n samples."""
    correct, tokens = 0, 0
    for item, per_input in zip(inputs, chains):
        vote = majority_vote(sample_answers(task, [chain.final_text for chain in per_input]), threshold=0.0)
        correct += vote.answer == item.label
        tokens += sum(chain.num_tokens for chain in per_input)
    return SystemScore(name, correct / len(inputs), correct, len(inputs), tokens / len(inputs))


def held_out_inputs(spec: JobSpec) -> list[TaskInput]:
    """The eval split, minus anything this job distilled from: disjoint by construction, whatever the task."""
    task = get_task(spec.task.name)
    distilled = {item.input_id for item in task.generate(spec.task.num_inputs, spec.task.seed, "train")}
    return [item for item in task.generate(spec.eval.num_inputs, spec.task.seed, "eval") if item.input_id not in distilled]


def run_eval(spec: JobSpec, adapter_dir: Path | None = None) -> dict:
    from cluster.connect import connect
    from cluster.resources import replica_resources
    from actors.replica import GenerationReplica, sampling_request

    out = spec.out_path
    adapter_dir = adapter_dir or out / "model"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no trained adapter in {adapter_dir}: run `s2d train` on this job first")
    task = get_task(spec.task.name)
    inputs = held_out_inputs(spec)
    contexts = [{"question": item.question, "system1_prompt": task.system1_prompt(item.question)} for item in inputs]

    ray = connect()
    resources = replica_resources(spec, ray.cluster_resources().get("GPU", 0))
    replica = ray.remote(GenerationReplica).options(**resources).remote(
        **GenerationReplica.for_job(spec, max_lora_rank=spec.train.lora.r)
    )
    direct = SamplingRequest(n=1, temperature=0.0, max_tokens=spec.eval.max_tokens)
    timings: dict[str, float] = {}

    def timed(label: str, *args) -> list[list[Chain]]:
        started = time.monotonic()
        result = ray.get(replica.run.remote(*args))
        timings[label] = (time.monotonic() - started) / len(inputs)
        return result

    try:
        ray.get(replica.ready.remote())
        system1 = timed("system1", "system1", contexts, direct)
        system2_request = replace(sampling_request(spec.sampling), n=spec.eval.system2_samples)
        system2 = timed("system2", spec.method.name, contexts, system2_request)
        distilled = timed("distilled", "system1", contexts, direct, str(adapter_dir.resolve()))
    finally:
        ray.kill(replica)

    n = spec.eval.system2_samples
    scores = [
        score_single("System 1 (base model, direct)", task.name, inputs, system1),
        score_single(f"System 2 ({spec.method.name}, single sample" + (f", mean of {n})" if n > 1 else ")"),
                     task.name, inputs, system2),
        score_single("Distilled System 1 (base + LoRA, direct)", task.name, inputs, distilled),
    ]
    if n > 1:
        scores.insert(2, score_majority(f"System 2 ({spec.method.name}, majority of {n})", task.name, inputs, system2))
    metrics = {
        "task": task.name, "method": spec.method.name, "model": spec.model, "eval_inputs": len(inputs),
        "samples_for_system2": n, "adapter": str(adapter_dir),
        "seconds_per_input": timings,
        "systems": [asdict(score) for score in scores],
    }
    eval_dir = out / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (eval_dir / "report.md").write_text(render_report(metrics))
    return metrics


def render_report(metrics: dict) -> str:
    lines = [
        f"# s2d evaluation: {metrics['task']} / {metrics['method']} / {metrics['model']}",
        "",
        f"{metrics['eval_inputs']} held-out inputs (disjoint from the distillation inputs). "
        "Tokens per answer count every generated token, reasoning and all samples included.",
        "",
        "| system | accuracy | correct / total | tokens per answer |",
        "|---|---:|---:|---:|",
    ]
    for score in metrics["systems"]:
        lines.append(
            f"| {score['system']} | {score['accuracy']:.1%} | {score['correct']:g} / {score['total']} "
            f"| {score['tokens_per_answer']:.1f} |"
        )
    return "\n".join(lines) + "\n"
