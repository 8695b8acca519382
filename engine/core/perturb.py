"""Perturbations: rewrites of an input that must not change its answer, for the `perturbation` criterion.

A perturbation turns one input into a variant (`apply(item, task, rng)`); the variant knows how to map
an answer given to it back to the original input's answer space (`Variant.invert`), e.g. after swapping
responses A and B, a verdict "A" means "B". The inverse is a plain mapping of normalised answers, so it
travels in a row from the replica (which generates variants) to the curation stage (which inverts).

Register a new perturbation with `register(MyPerturbation())`; job specs name it by `curate.perturbation`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from s2d.engine.core.tasks import FIRST_NAMES, Task, TaskInput, input_fields_of
from s2d.engine.core.tasks.multiple_choice import option_letter


@dataclass(frozen=True)
class Variant:
    question: str
    fields: dict[str, Any] = field(default_factory=dict)
    # variant answer -> original answer, over normalised answers; an answer not listed maps to itself
    inverse: dict[str, str] = field(default_factory=dict)

    def invert(self, answer: str | None) -> str | None:
        return invert_answer(self.inverse, answer)


def invert_answer(inverse: dict[str, str], answer: str | None) -> str | None:
    """A variant's answer in the original input's answer space (curation holds only the mapping, as JSON)."""
    return None if answer is None else inverse.get(answer, answer)


def identity(item: TaskInput) -> Variant:
    """Variant 0 of every input: the input itself."""
    return Variant(item.question, dict(item.fields))


class Perturbation(Protocol):
    name: str
    description: str

    def check_task(self, task: Task) -> None:
        """Raise ValueError when this perturbation cannot rewrite the task's inputs."""
        ...

    def apply(self, item: TaskInput, task: Task, rng: random.Random) -> Variant: ...


def _require_fields(perturbation: str, task: Task, needed: tuple[str, ...]) -> None:
    missing = set(needed) - set(input_fields_of(task))
    if missing:
        raise ValueError(
            f"perturbation {perturbation!r} needs a task with fields {sorted(needed)}; "
            f"task {task.name!r} has {sorted(input_fields_of(task)) or 'none'}"
        )


@dataclass(frozen=True)
class SwapResponses:
    """Swap responses A and B of a pairwise judgement; the verdict maps back (A<->B, tie stays)."""

    name: str = "swap_responses"
    description: str = "pairwise judging: swap responses A and B, mapping the verdict back"

    def check_task(self, task: Task) -> None:
        _require_fields(self.name, task, ("response_a", "response_b"))

    def apply(self, item: TaskInput, task: Task, rng: random.Random) -> Variant:
        fields = {**item.fields, "response_a": item.fields["response_b"], "response_b": item.fields["response_a"]}
        return Variant(task.compose(fields), fields, {"A": "B", "B": "A"})


@dataclass(frozen=True)
class ShuffleOptions:
    """Permute the options of a multiple-choice question (never the identity); letters map back."""

    name: str = "shuffle_options"
    description: str = "multiple choice: permute the options, mapping the chosen letter back"

    def check_task(self, task: Task) -> None:
        _require_fields(self.name, task, ("options",))

    def apply(self, item: TaskInput, task: Task, rng: random.Random) -> Variant:
        options = list(item.fields["options"])
        order = list(range(len(options)))
        if len(order) > 1:
            while order == sorted(order):  # a variant equal to the input tests nothing
                rng.shuffle(order)
        fields = {**item.fields, "options": [options[source] for source in order]}
        inverse = {option_letter(position): option_letter(source) for position, source in enumerate(order)}
        return Variant(task.compose(fields), fields, inverse)


_NAME_PATTERN = re.compile(r"\b(" + "|".join(sorted(FIRST_NAMES, key=len, reverse=True)) + r")\b")


@dataclass(frozen=True)
class RenameEntities:
    """Rename every person consistently, each to another name ending in the same letter.

    Keeping the last letter keeps a last-letter concatenation's answer; coin flips do not depend on
    names at all. So the answer is unchanged and the inverse is the identity.
    """

    name: str = "rename_entities"
    description: str = "last letter / coin flip: rename people consistently (same last letter)"
    tasks: tuple[str, ...] = ("last_letter", "coin_flip")

    def check_task(self, task: Task) -> None:
        if task.name not in self.tasks:
            raise ValueError(f"perturbation {self.name!r} applies to tasks {list(self.tasks)}, not {task.name!r}")

    def apply(self, item: TaskInput, task: Task, rng: random.Random) -> Variant:
        present = list(dict.fromkeys(_NAME_PATTERN.findall(item.question)))
        taken = set(present)
        renames: dict[str, str] = {}
        for name in present:
            candidates = [other for other in FIRST_NAMES if other[-1] == name[-1] and other not in taken]
            if candidates:
                renames[name] = rng.choice(candidates)
                taken.add(renames[name])
        question = _NAME_PATTERN.sub(lambda match: renames.get(match.group(1), match.group(1)), item.question)
        return Variant(question, dict(item.fields))


PERTURBATIONS: dict[str, Perturbation] = {}


def register(perturbation: Perturbation) -> None:
    if perturbation.name in PERTURBATIONS:
        raise ValueError(f"perturbation {perturbation.name!r} is already registered")
    PERTURBATIONS[perturbation.name] = perturbation


for _builtin in (SwapResponses(), ShuffleOptions(), RenameEntities()):
    register(_builtin)


def get_perturbation(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {sorted(PERTURBATIONS)}") from None


def make_variants(item: TaskInput, task: Task, perturbation: Perturbation, count: int, seed: int) -> list[Variant]:
    """`count` variants of an input: the input itself first, then `count - 1` perturbed ones.

    Each perturbed variant has its own rng, seeded by input id, perturbation, position and job seed, so
    a rerun (or a resumed job) rewrites every input the same way.
    """
    variants = [identity(item)]
    for position in range(1, count):
        rng = random.Random(f"{item.input_id}:{perturbation.name}:{position}:{seed}")
        variants.append(perturbation.apply(item, task, rng))
    return variants
