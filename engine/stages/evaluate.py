"""Evaluation on held-out inputs: System 1 (base, direct), System 2 (the method), distilled System 1.

One replica actor serves System 1, System 2 and, for a LoRA result, the distilled System 1 (the adapter on
the same engine, vLLM with LoRA enabled). A merged model (eval.distilled=merged) or a full fine-tune is a
different model, so it gets a second replica. System 2 is sampled n times per input (eval.system2_samples,
default the job's sampling.n) and reported two ways: majority vote over n (what curation trusts) and mean
single-sample accuracy. Each system's agreement with System 2 (its answers equal to System 2's vote, on the
inputs where that vote meets the job's criterion) measures what distillation transfers, labels or not.
The report (table + chart) is engine/report.py.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from s2d.engine.core.criteria import input_context, sample_answers
from s2d.engine.core.methods import Extractor, resolve_method
from s2d.engine.core.program import Chain, SamplingRequest
from s2d.engine.core.spec import JobSpec
from s2d.engine.core.tasks import TaskInput, get_task
from s2d.engine.core.votes import majority_vote
from s2d.engine.data.folder_swap import clear_leftovers, replace_folder, staging_folder
from s2d.engine.stages.report import plot_runs, render_report, wilson_interval

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


@dataclass(frozen=True)
class SystemScore:
    system: str
    kind: str  # system1 | system2 | distilled
    accuracy: float
    correct: float
    total: int  # held-out inputs
    samples: int  # scored answers (inputs x samples for a mean over samples); the CI's sample size
    tokens_per_answer: float  # generated tokens per answer, all steps of all samples that made it
    ci_low: float  # 95% Wilson interval of the accuracy
    ci_high: float
    latency_s: float | None = None  # batched: the system's wall time over the held-out set / inputs
    # Agreement with System 2: the share of its answers (over the inputs where System 2's own samples reach the
    # job's criterion) that equal System 2's majority answer; None for System 2's majority, which is the reference.
    agreement: float | None = None
    agreement_low: float | None = None  # 95% Wilson interval of the agreement
    agreement_high: float | None = None
    agreement_samples: int | None = None  # answers compared: reference inputs x the system's samples per input


def _score(name: str, kind: str, correct: float, total: int, samples: int, tokens: float) -> SystemScore:
    accuracy = correct / samples
    low, high = wilson_interval(correct, samples)
    return SystemScore(name, kind, accuracy, accuracy * total, total, samples, tokens, low, high)


def _answers(task: str, chains: list[Chain], extractor: Extractor | None) -> list[str | None]:
    # The method's extractor (a custom method may define one); direct answers use the default.
    return sample_answers(get_task(task), extractor or Extractor(), [chain.final_text for chain in chains])


def score_single(
    name: str,
    kind: str,
    task: str,
    inputs: Sequence[TaskInput],
    chains: list[list[Chain]],
    extractor: Extractor | None = None,
) -> SystemScore:
    """Mean accuracy over every sample (for n=1, plain accuracy)."""
    correct, samples, tokens = 0, 0, 0
    for item, per_input in zip(inputs, chains):
        answers = _answers(task, per_input, extractor)
        correct += sum(answer == item.label for answer in answers)
        samples += len(per_input)
        tokens += sum(chain.num_tokens for chain in per_input)
    return _score(name, kind, correct, len(inputs), samples, tokens / samples)


def score_majority(
    name: str, task: str, inputs: Sequence[TaskInput], chains: list[list[Chain]], extractor: Extractor | None = None
) -> SystemScore:
    """Accuracy of the majority answer (threshold 0: plurality, ties count as wrong); tokens of all n samples."""
    correct, tokens = 0, 0
    for item, per_input in zip(inputs, chains):
        vote = majority_vote(_answers(task, per_input, extractor), threshold=0.0)
        correct += vote.answer == item.label
        tokens += sum(chain.num_tokens for chain in per_input)
    return _score(name, "system2", correct, len(inputs), len(inputs), tokens / len(inputs))


def system2_reference(
    task: str, chains: list[list[Chain]], extractor: Extractor | None, threshold: float
) -> list[str | None]:
    """System 2's answer per input as the job's vote decides it over its n samples; None where the vote would
    reject the input (tie, below threshold, no answer). Distillation trains System 1 toward exactly this."""
    return [majority_vote(_answers(task, per_input, extractor), threshold).answer for per_input in chains]


def score_agreement(
    score: SystemScore,
    task: str,
    chains: list[list[Chain]],
    reference: Sequence[str | None],
    extractor: Extractor | None = None,
) -> SystemScore:
    """`score` with its agreement with System 2: over the inputs that have a reference answer, the share of this
    system's answers (every sample's, for a sampled system) equal to it."""
    agreeing, compared = 0, 0
    for per_input, expected in zip(chains, reference):
        if expected is None:
            continue
        answers = _answers(task, per_input, extractor)
        agreeing += sum(answer == expected for answer in answers)
        compared += len(answers)
    if not compared:
        return score
    low, high = wilson_interval(agreeing, compared)
    return replace(
        score, agreement=agreeing / compared, agreement_low=low, agreement_high=high, agreement_samples=compared
    )


def held_out_inputs(spec: JobSpec) -> list[TaskInput]:
    """The eval split, minus anything this job distilled from: disjoint by construction, whatever the task."""
    if spec.data.path:
        from s2d.engine.data.sources import labeled_eval_inputs

        return labeled_eval_inputs(spec)
    task = get_task(spec.task.name)
    distilled = {item.input_id for item in task.generate(spec.task.num_inputs, spec.task.seed, "train")}
    return [
        item for item in task.generate(spec.eval.num_inputs, spec.task.seed, "eval") if item.input_id not in distilled
    ]


def distilled_model(spec: JobSpec, model_dir: Path) -> tuple[str | None, str | None, str]:
    """(adapter, model, label) of the distilled System 1 in `model_dir`: a LoRA adapter on the base model, the
    merged copy of it, or a full fine-tune; a clear error when what the spec asks for is not there."""
    adapter = model_dir / "adapter_config.json"
    if adapter.is_file():
        if spec.eval.distilled == "adapter":
            return str(model_dir.resolve()), None, "Distilled System 1 (base + LoRA, direct)"
        merged = model_dir / "merged"
        if not (merged / "config.json").is_file():
            raise FileNotFoundError(f"eval.distilled=merged but {merged} holds no model: train with train.merge=true")
        return None, str(merged.resolve()), "Distilled System 1 (merged LoRA, direct)"
    if (model_dir / "config.json").is_file():
        return None, str(model_dir.resolve()), "Distilled System 1 (full fine-tune, direct)"
    raise FileNotFoundError(f"no trained model in {model_dir}: run `s2d train` on this job first")


def adapter_rank(adapter_dir: str) -> int:
    """The smallest max_lora_rank vLLM accepts that fits the adapter's rank."""
    rank = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 8))
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def run_eval(spec: JobSpec, model_dir: Path | None = None, *, allow_partial: bool = False) -> dict:
    """Evaluate the three systems; `<out>/eval/` is replaced whole. `allow_partial`: evaluate a model trained on an
    unfinished generate instead of refusing (the caller holds the output's lease)."""
    from s2d.actors.replica import GenerationReplica, sampling_request
    from s2d.cluster.connect import connect
    from s2d.cluster.resources import replica_resources
    from s2d.training.trainer import check_generate_finished

    out = spec.out_path
    check_generate_finished(out, allow_partial, stage="eval")
    model_dir = Path(model_dir or out / "model")
    adapter, other_model, distilled_name = distilled_model(spec, model_dir)
    task = get_task(spec.task.name)
    inputs = held_out_inputs(spec)
    # bsm's templates read the task's fields (instruction, response_a, response_b), not just the question
    contexts = [input_context(task, item) for item in inputs]

    ray = connect()
    resources = replica_resources(spec, ray.cluster_resources().get("GPU", 0))
    direct = SamplingRequest(n=1, temperature=0.0, max_tokens=spec.eval.max_tokens)
    timings: dict[str, float] = {}
    engine_start_s = 0.0

    def start(model: str, lora_rank: int | None) -> Any:
        nonlocal engine_start_s
        started = time.monotonic()
        kwargs = GenerationReplica.for_job(spec, max_lora_rank=lora_rank) | {"model": model}
        replica = ray.remote(GenerationReplica).options(**resources).remote(**kwargs)
        ray.get(replica.ready.remote())  # engine start-up stays out of the per-input timings
        engine_start_s += time.monotonic() - started
        return replica

    def timed(replica: Any, label: str, *args) -> list[list[Chain]]:
        started = time.monotonic()
        result = ray.get(replica.run.remote(*args))
        timings[label] = (time.monotonic() - started) / len(inputs)
        return result

    replica = start(spec.model, adapter_rank(adapter) if adapter else None)
    try:
        system1 = timed(replica, "system1", "system1", contexts, direct)
        system2_request = replace(sampling_request(spec.sampling), n=spec.eval.system2_samples or spec.sampling.n)
        # the method section, not its name: a custom method is defined by its steps there
        system2 = timed(replica, "system2", spec.method.model_dump(), contexts, system2_request)
        if adapter:
            distilled = timed(replica, "distilled", "system1", contexts, direct, adapter)
    finally:
        ray.kill(replica)
    if other_model:
        replica = start(other_model, None)
        try:
            distilled = timed(replica, "distilled", "system1", contexts, direct)
        finally:
            ray.kill(replica)

    n = system2_request.n
    extractor = resolve_method(spec.method.model_dump()).extractor
    # The reference answer is the job's own criterion: the vote at curate.threshold (a plurality for the rules
    # that decide otherwise: perturbation's variants and usc's judge are not rerun on held-out inputs).
    threshold = spec.curate.threshold if spec.curate.rule == "majority" else 0.0
    reference = system2_reference(task.name, system2, extractor, threshold)

    def scored(name: str, kind: str, chains: list[list[Chain]], method_extractor: Extractor | None = None):
        single = score_single(name, kind, task.name, inputs, chains, method_extractor)
        return score_agreement(single, task.name, chains, reference, method_extractor)

    scores = [
        scored("System 1 (base model, direct)", "system1", system1),
        scored(
            f"System 2 ({spec.method.name}, single sample" + (f", mean of {n})" if n > 1 else ")"),
            "system2",
            system2,
            extractor,
        ),
        scored(distilled_name, "distilled", distilled),
    ]
    if n > 1:
        scores.insert(
            2, score_majority(f"System 2 ({spec.method.name}, majority of {n})", task.name, inputs, system2, extractor)
        )
    scores = [replace(score, latency_s=timings[score.kind]) for score in scores]
    metrics = {
        "task": task.name,
        "method": spec.method.name,
        "model": spec.model,
        "eval_inputs": len(inputs),
        "samples_for_system2": n,
        "distilled_model": adapter or other_model,
        "run": str(out),
        "agreement_reference": {"threshold": threshold, "inputs": sum(answer is not None for answer in reference)},
        "seconds_per_input": timings,
        "engine_start_s": round(engine_start_s, 2),
        "systems": [asdict(score) for score in scores],
    }
    write_eval_folder(out / "eval", metrics)
    return metrics


def _keep_foreign_files(eval_dir: Path, staged: Path) -> None:
    """What a user put in eval/ beside s2d's three files moves with the swap: s2d replaces only its own files."""
    if not eval_dir.is_dir():
        return
    for entry in eval_dir.iterdir():
        if not (staged / entry.name).exists():
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, staged / entry.name)


def write_eval_folder(eval_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, report.md and report.png, written beside `eval_dir` and swapped in whole: a crash leaves the
    previous evaluation's three files, never a new metrics.json beside an old report."""
    clear_leftovers(eval_dir)
    staged = staging_folder(eval_dir)
    try:
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_runs([metrics], staged / "report.png")
        (staged / "report.md").write_text(render_report(metrics))
        _keep_foreign_files(eval_dir, staged)
        replace_folder(staged, eval_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after the swap; a failure leaves no temporary folder
