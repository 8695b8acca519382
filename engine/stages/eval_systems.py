"""Which systems `s2d eval` runs, on which replica, under which names.

The teacher is the job's `model` (it generated the distillation pairs); the student is the model `s2d train` fine-
tuned (`train.model`, else the teacher itself). Without a student of its own, one replica of the model serves
System 1, System 2 and a LoRA result's distilled System 1 (the adapter on the same engine). With one, the teacher's
replica serves its System 1 and System 2, and a second replica the student's base System 1 and, for a LoRA
result, the distilled student. A merged model (eval.distilled=merged) or a full fine-tune is another model again:
its own replica.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d.engine.core.program import SamplingRequest
from s2d.engine.core.scoring import TEACHER_SYSTEM1
from s2d.engine.core.seeds import model_folder, seed_kind
from s2d.engine.core.spec import JobSpec

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


@dataclass(frozen=True)
class SystemRun:
    """One system's answers on the held-out set: its kind (the key of its chains and timing), what the replica
    runs (`system1`, or the method section) and the adapter it runs under."""

    kind: str
    method: Any
    request: SamplingRequest
    adapter: str | None = None


@dataclass(frozen=True)
class ReplicaPlan:
    """One replica (one engine start): its model, its LoRA rank (None: no LoRA) and the systems it serves."""

    model: str
    lora_rank: int | None
    runs: tuple[SystemRun, ...]


def distilled_model(spec: JobSpec, model_dir: Path) -> tuple[str | None, str | None, str]:
    """(adapter, model, label) of the distilled System 1 in `model_dir`: a LoRA adapter on the base model (the
    student), the merged copy of it, or a full fine-tune; a clear error when what the spec asks for is not there."""
    base = "student" if spec.has_student else "base"
    adapter = model_dir / "adapter_config.json"
    if adapter.is_file():
        if spec.eval.distilled == "adapter":
            return str(model_dir.resolve()), None, f"Distilled System 1 ({base} + LoRA, direct)"
        merged = model_dir / "merged"
        if not (merged / "config.json").is_file():
            raise FileNotFoundError(f"eval.distilled=merged but {merged} holds no model: train with train.merge=true")
        return None, str(merged.resolve()), f"Distilled System 1 (merged LoRA{' student' * spec.has_student}, direct)"
    if (model_dir / "config.json").is_file():
        return (
            None,
            str(model_dir.resolve()),
            f"Distilled System 1 (full fine-tune{' student' * spec.has_student}, direct)",
        )
    raise FileNotFoundError(f"no trained model in {model_dir}: run `s2d train` on this job first")


def seed_models(spec: JobSpec, out: Path) -> list[tuple[int, str | None, str | None]]:
    """The distilled models of seeds 1..k-1 (eval.seeds), (seed, adapter, model) each, from `<out>/model-seed<s>/`;
    one line naming the seed and what to run when one was not trained."""
    found = []
    for seed in range(1, spec.eval.seeds):
        folder = out / model_folder(seed)
        try:
            adapter, model, _ = distilled_model(spec, folder)
        except FileNotFoundError as missing:
            raise FileNotFoundError(
                f"eval.seeds={spec.eval.seeds}: seed {seed} has no model ({missing}); run `s2d train` with the same "
                "eval.seeds first (finished seeds are kept, not retrained)"
            ) from None
        found.append((seed, adapter, model))
    return found


def adapter_rank(adapter_dir: str) -> int:
    """The smallest max_lora_rank vLLM accepts that fits the adapter's rank."""
    rank = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 8))
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def replica_plans(
    spec: JobSpec,
    adapter: str | None,
    other_model: str | None,
    direct: SamplingRequest,
    system2: SamplingRequest,
    seeds: Sequence[tuple[int, str | None, str | None]] = (),
) -> list[ReplicaPlan]:
    """The replicas of an evaluation, in order, with the systems each serves (see the module's docstring).
    `seeds`: the other seeds' distilled models (eval.seeds), (seed, adapter, model) as `distilled_model` gives them:
    an adapter joins seed 0's on the same engine (one engine start for every seed), a model gets its own replica."""
    adapters = [adapter] + [seeded for _, seeded, _ in seeds]
    rank = max((adapter_rank(path) for path in adapters if path), default=None)
    # the method section, not its name: a custom method is defined by its steps there
    method = SystemRun("system2", spec.method.model_dump(), system2)
    distilled = [SystemRun("distilled", "system1", direct, adapter)] if adapter else []
    distilled += [SystemRun(seed_kind(seed), "system1", direct, seeded) for seed, seeded, _ in seeds if seeded]
    if spec.has_student:
        plans = [
            ReplicaPlan(spec.model, None, (SystemRun(TEACHER_SYSTEM1, "system1", direct), method)),
            ReplicaPlan(spec.student, rank, (SystemRun("system1", "system1", direct), *distilled)),
        ]
    else:
        plans = [ReplicaPlan(spec.model, rank, (SystemRun("system1", "system1", direct), method, *distilled))]
    if other_model:
        plans.append(ReplicaPlan(other_model, None, (SystemRun("distilled", "system1", direct),)))
    for seed, _, model in seeds:
        if model:
            plans.append(ReplicaPlan(model, None, (SystemRun(seed_kind(seed), "system1", direct),)))
    return plans


def system_names(spec: JobSpec, samples: int, distilled: str) -> dict[str, str]:
    """Each system's report name by its kind, in the report's order (System 2's majority of its samples under
    `system2_majority`, only when there are several); `distilled` names the distilled System 1."""
    method = spec.method.name
    teacher = "teacher, " if spec.has_student else ""
    single = f"System 2 ({teacher}{method}, single sample" + (f", mean of {samples})" if samples > 1 else ")")
    system2 = {"system2": single}
    if samples > 1:
        system2["system2_majority"] = f"System 2 ({teacher}{method}, majority of {samples})"
    if not spec.has_student:
        return {"system1": "System 1 (base model, direct)", **system2, "distilled": distilled}
    return {
        TEACHER_SYSTEM1: "System 1 (teacher, direct)",
        **system2,
        "system1": "System 1 (student base, direct)",
        "distilled": distilled,
    }


EvalJob = tuple[JobSpec, list[ReplicaPlan], list[dict[str, Any]]]  # a job, its replica plans, its inputs' contexts
Ran = tuple[dict[str, list[list[Any]]], dict[str, float], float]  # kind -> chains, kind -> s per input, engine start


def engine_key(kwargs: dict[str, Any]) -> str:
    """What makes two replicas the same engine: model, engine settings, seed and LoRA rank. The rest of a replica's
    arguments (method, task, criterion, sampling) serve `s2d generate`; eval passes method and sampling per run."""
    return json.dumps({key: kwargs[key] for key in ("model", "engine", "seed", "max_lora_rank")}, sort_keys=True)


def run_plans(jobs: list[EvalJob]) -> list[Ran]:
    """Run every job's systems, one replica per distinct engine (`engine_key`) in the order first planned, each
    killed once its runs are done. A shared engine's start counts under the first job that uses it."""
    from s2d.actors.replica import GenerationReplica
    from s2d.cluster.connect import connect
    from s2d.cluster.resources import replica_resources

    ray = connect()
    engines: dict[str, list[tuple[int, ReplicaPlan, dict[str, Any]]]] = {}
    for index, (spec, plans, _) in enumerate(jobs):
        for plan in plans:
            kwargs = GenerationReplica.for_job(spec, max_lora_rank=plan.lora_rank) | {"model": plan.model}
            engines.setdefault(engine_key(kwargs), []).append((index, plan, kwargs))
    ran: list[Ran] = [({}, {}, 0.0) for _ in jobs]
    for members in engines.values():
        first, _, kwargs = members[0]
        resources = replica_resources(jobs[first][0], ray.cluster_resources().get("GPU", 0))
        started = time.monotonic()
        replica = ray.remote(GenerationReplica).options(**resources).remote(**kwargs)
        try:
            ray.get(replica.ready.remote())  # engine start-up stays out of the per-input timings
            chains, timings, start_s = ran[first]
            ran[first] = (chains, timings, start_s + time.monotonic() - started)
            for index, plan, _ in members:
                contexts = jobs[index][2]
                for run in plan.runs:
                    started = time.monotonic()
                    extra = (run.adapter,) if run.adapter else ()
                    ran[index][0][run.kind] = ray.get(replica.run.remote(run.method, contexts, run.request, *extra))
                    ran[index][1][run.kind] = (time.monotonic() - started) / len(contexts)
        finally:
            ray.kill(replica)
    return ran
