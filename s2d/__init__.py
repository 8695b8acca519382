"""s2d: System 2 distillation at cluster scale.

The one import package of the distribution. Its layers are the repository's folders (docs/architecture.md):
s2d.engine.core (pure decisions), s2d.engine.data (the output's layout), s2d.engine.stages (what runs a job, and
this API), s2d.actors, s2d.cluster and s2d.training (thin adapters over vLLM, Ray and DeepSpeed).

    import s2d
    result = s2d.run_job("configs/demo.yaml", out="runs/try")
"""

from pathlib import Path as _Path

# In a checkout the subpackages are the repository's own folders (s2d.engine is engine/, ...), found through the
# installed package's mapping; putting the checkout on the path as well makes `PYTHONPATH=<checkout>` run that
# checkout's code (another worktree, `bench/scale.py --code`), whatever is installed.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "engine" / "__init__.py").is_file():
    __path__.append(str(_checkout))

from s2d.engine.core.spec import JobSpec, SpecError, load_spec  # noqa: E402 - after the path is set
from s2d.engine.stages.api import evaluate, generate, pilot, run_job, train  # noqa: E402
from s2d.engine.stages.results import EvalResult, GenerateResult, JobResult, RoundsResult, TrainResult  # noqa: E402

__all__ = [
    "EvalResult",
    "GenerateResult",
    "JobResult",
    "JobSpec",
    "PilotResult",
    "RoundsResult",
    "SpecError",
    "TrainResult",
    "evaluate",
    "generate",
    "load_spec",
    "pilot",
    "run_job",
    "train",
]
