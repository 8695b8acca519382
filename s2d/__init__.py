"""s2d: System 2 distillation at cluster scale.

The one import package of the distribution. Its layers are the repository's folders (docs/architecture.md):
s2d.engine.core (pure decisions), s2d.engine.data (the output's layout), s2d.engine.stages (what runs a job, and
this API), s2d.actors, s2d.cluster and s2d.training (thin adapters over vLLM, Ray and DeepSpeed).

    import s2d
    result = s2d.run_job("configs/demo.yaml", out="runs/try")
"""

from s2d.engine.core.spec import JobSpec, SpecError, load_spec
from s2d.engine.stages.api import evaluate, generate, run_job, train
from s2d.engine.stages.results import EvalResult, GenerateResult, JobResult, TrainResult

__all__ = [
    "EvalResult",
    "GenerateResult",
    "JobResult",
    "JobSpec",
    "SpecError",
    "TrainResult",
    "evaluate",
    "generate",
    "load_spec",
    "run_job",
    "train",
]
