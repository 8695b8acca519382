"""System 2 methods as prompt programs: ordered steps whose prompts live in data files (engine/prompts/*.yaml).

A step's prompt is a Jinja template rendered in a sandbox; it sees the input (`question`,
`system1_prompt`) and the text of every earlier step by that step's name. The first step is sampled
n times; every later step continues each of the n chains once, so sample i's answer comes from
sample i's own reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Step:
    name: str
    prompt: str


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    steps: tuple[Step, ...]

    def render(self, step_index: int, context: dict[str, str]) -> str:
        return _template(self.steps[step_index].prompt).render(**context)


@lru_cache(maxsize=None)
def _template(source: str):
    # Sandboxed and strict: a template cannot reach Python internals, and a misspelt variable fails loudly.
    # Input text is passed as a value, never parsed as a template, so braces inside questions are inert.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False).from_string(source)


def load_method(path: Path) -> Method:
    data = yaml.safe_load(path.read_text())
    steps = tuple(Step(name=step["name"], prompt=step["prompt"]) for step in data["steps"])
    if not steps:
        raise ValueError(f"{path}: a method needs at least one step")
    return Method(name=data["name"], description=data["description"], steps=steps)


def _load_all() -> dict[str, Method]:
    methods = (load_method(path) for path in sorted(PROMPTS_DIR.glob("*.yaml")))
    return {method.name: method for method in methods}


METHODS: dict[str, Method] = _load_all()


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
