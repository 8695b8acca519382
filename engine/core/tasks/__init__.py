"""Built-in synthetic tasks: seeded input generators with ground truth kept for evaluation only.

Each task is one module; this package is the registry. See `s2d.engine.core.tasks.base` for the Task protocol.
"""

from __future__ import annotations

from s2d.engine.core.tasks.arithmetic import ArithmeticTask
from s2d.engine.core.tasks.base import (
    FIRST_NAMES,
    Exemplar,
    Split,
    StructuredTask,
    Task,
    TaskInput,
    input_fields_of,
    make_input_id,
    task_variables,
)
from s2d.engine.core.tasks.coin_flip import CoinFlipTask
from s2d.engine.core.tasks.freeform import FreeformTask
from s2d.engine.core.tasks.last_letter import LastLetterOneTask, LastLetterTask
from s2d.engine.core.tasks.multiple_choice import MultipleChoiceTask
from s2d.engine.core.tasks.pairwise_judge import PairwiseJudgeTask
from s2d.engine.core.tasks.sycophancy import SycophancyTask

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        LastLetterTask(),
        LastLetterOneTask(),
        CoinFlipTask(),
        SycophancyTask(),
        ArithmeticTask(),
        PairwiseJudgeTask(),
        MultipleChoiceTask(),
        FreeformTask(),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}") from None


__all__ = [
    "FIRST_NAMES",
    "TASKS",
    "ArithmeticTask",
    "CoinFlipTask",
    "Exemplar",
    "FreeformTask",
    "LastLetterOneTask",
    "LastLetterTask",
    "MultipleChoiceTask",
    "PairwiseJudgeTask",
    "Split",
    "StructuredTask",
    "SycophancyTask",
    "Task",
    "TaskInput",
    "get_task",
    "input_fields_of",
    "make_input_id",
    "task_variables",
]
