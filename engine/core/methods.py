"""System 2 methods as prompt programs: ordered steps whose prompts live in data files (engine/prompts/*.yaml).

A step's prompt is a Jinja template rendered in a sandbox; it sees the input (`question`,
`system1_prompt`, and the task's structured fields such as `response_a`) and the output of every earlier
step by that step's name. The first step is sampled n times; every later step continues each of the n
chains, so sample i's answer comes from sample i's own reasoning. A later step is one of:

- a prompt: one LLM call per chain;
- a fan-out (`for_each`): an earlier step's text is parsed into items (up to `max_items`) and the prompt
  runs once per item; the step's output is the list of texts (Branch-Solve-Merge's per-criterion solve);
- a computed step (`compute`): a named Python function of the chain's outputs, no LLM call (BSM's merge).

A prompt step may name `stop` strings: its generation ends where one first appears, which is left out of the step's
text (vLLM's `stop`). A few-shot prompt stops where an invented next exemplar would begin, so a sample ends with
its own answer and the extractor never reads a made-up question's tail.

The `custom` method is the same program built from templates in the job spec instead of a file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, meta
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from s2d.engine.core.answers import extract_final_answer, parse_list_items, parse_pair_scores

PROMPTS_DIR = Path(__file__).parent / "prompts"
INPUT_VARIABLES = ("question", "system1_prompt")
CUSTOM = "custom"
CUSTOM_DESCRIPTION = "User-supplied Jinja templates per step (method.steps in the job spec) and an answer extractor."


@dataclass(frozen=True)
class ForEach:
    step: str  # an earlier step whose text is split into items
    item: str  # the variable name each item has in this step's prompt
    max_items: int = 5
    parse: str = "list_items"  # a name in ITEM_PARSERS


@dataclass(frozen=True)
class Step:
    name: str
    prompt: str | None = None
    for_each: ForEach | None = None
    compute: str | None = None  # a name in COMPUTED_STEPS; set instead of a prompt
    stop: tuple[str, ...] = ()  # strings that end this step's generation (left out of its text)


@dataclass(frozen=True)
class Extractor:
    """How a sample's final text becomes its raw answer, before the task normalises it."""

    kind: Literal["answer_marker", "last_line", "regex"] = "answer_marker"
    pattern: str | None = None  # regex kind: the last match's first group (or the whole match) is the answer

    def __call__(self, text: str | None) -> str | None:
        if self.kind == "answer_marker":
            return extract_final_answer(text)
        if not text:
            return None
        if self.kind == "last_line":
            return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), None)
        matches = list(_regex(self.pattern).finditer(text))
        if not matches:
            return None
        last = matches[-1]
        span = last.group(1) if last.re.groups else last.group(0)
        return (span or "").strip() or None  # an optional group that did not take part is None


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    steps: tuple[Step, ...]
    extractor: Extractor = field(default_factory=Extractor)

    def render(self, step_index: int, context: dict[str, Any]) -> str:
        return _template(self.steps[step_index].prompt).render(**context)

    def extract_answer(self, text: str | None) -> str | None:
        return self.extractor(text)

    @property
    def required_fields(self) -> frozenset[str]:
        """Input variables the templates read beyond question/system1_prompt: the task must provide them."""
        provided = set(INPUT_VARIABLES) | {step.name for step in self.steps}
        provided |= {step.for_each.item for step in self.steps if step.for_each}
        referenced: set[str] = set()
        for step in self.steps:
            if step.prompt is not None:
                referenced |= meta.find_undeclared_variables(_ENVIRONMENT.parse(step.prompt))
        return frozenset(referenced - provided)


# Sandboxed and strict: a template cannot reach Python internals, and a misspelt variable fails loudly.
# Input text is passed as a value, never parsed as a template, so braces inside questions are inert.
_ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@cache
def _template(source: str):
    return _ENVIRONMENT.from_string(source)


def render_template(source: str, context: dict[str, Any]) -> str:
    """Render a prompt template in the methods' sandbox (strict: an unknown variable raises)."""
    return _template(source).render(**context)


def bsm_merge(outputs: dict[str, Any]) -> str:
    """Branch-Solve-Merge's merge: sum each response's 1-5 scores over the criteria both were scored on.

    The verdict is the higher total, "tie" on equal totals, and "none" when no criterion was scored
    (the pairwise_judge task reads "none" as no answer, so such a sample counts as unparseable).
    """
    scored = [scores for text in outputs["solve"] if (scores := parse_pair_scores(text)) is not None]
    if not scored:
        return f"No criterion was scored (0 of {len(outputs['solve'])}).\nAnswer: none"
    total_a, total_b = sum(a for a, _ in scored), sum(b for _, b in scored)
    verdict = "A" if total_a > total_b else "B" if total_b > total_a else "tie"
    return (
        f"Scored {len(scored)} of {len(outputs['solve'])} criteria: total A = {total_a}, B = {total_b}.\n"
        f"Answer: {verdict}"
    )


COMPUTED_STEPS: dict[str, Callable[[dict[str, Any]], str]] = {"bsm_merge": bsm_merge}
ITEM_PARSERS: dict[str, Callable[[str | None, int], list[str]]] = {"list_items": parse_list_items}


def method_from_definition(data: dict[str, Any], source: str) -> Method:
    """A Method from its file or job-spec form; every mistake is a ValueError naming `source` and the step."""
    steps_data = data.get("steps") or []
    if not steps_data:
        raise ValueError(f"{source}: a method needs at least one step")
    steps: list[Step] = []
    for index, raw in enumerate(steps_data):
        step = _step(raw, source)
        where = f"{source}: step {step.name!r}"
        if step.name in INPUT_VARIABLES or step.name in {s.name for s in steps}:
            raise ValueError(f"{where}: the name is taken (an input variable or an earlier step)")
        if index == 0 and step.prompt is None:
            raise ValueError(f"{where}: the first step must be a prompt (it is the one sampled n times)")
        if step.for_each and step.for_each.step not in {s.name for s in steps}:
            raise ValueError(f"{where}: for_each reads {step.for_each.step!r}, which is not an earlier step")
        steps.append(step)
    extractor = Extractor(**(data.get("extractor") or {}))
    if extractor.kind == "regex":
        if not extractor.pattern:
            raise ValueError(f"{source}: a regex extractor needs a pattern")
        try:
            _regex(extractor.pattern)
        except re.error as error:
            raise ValueError(
                f"{source}: extractor pattern {extractor.pattern!r} is not a valid regex: {error}"
            ) from None
    return Method(name=data["name"], description=data.get("description", ""), steps=tuple(steps), extractor=extractor)


def _step(raw: dict[str, Any], source: str) -> Step:
    name = raw.get("name")
    if not name or not str(name).isidentifier():
        raise ValueError(f"{source}: step name {name!r} is not an identifier (templates read it as a variable)")
    where = f"{source}: step {name!r}"
    prompt, compute, for_each = raw.get("prompt"), raw.get("compute"), raw.get("for_each")
    if (prompt is None) == (compute is None):
        raise ValueError(f"{where}: give exactly one of prompt or compute")
    if compute is not None and raw.get("stop") is not None:
        raise ValueError(f"{where}: stop needs a prompt (a computed step generates nothing)")
    if compute is not None and compute not in COMPUTED_STEPS:
        raise ValueError(f"{where}: unknown computed step {compute!r}; known: {sorted(COMPUTED_STEPS)}")
    if prompt is not None:
        try:
            _template(prompt)
        except TemplateSyntaxError as error:
            raise ValueError(f"{where}: template error at line {error.lineno}: {error.message}") from None
    fan_out = None
    if for_each is not None:
        if prompt is None:
            raise ValueError(f"{where}: for_each needs a prompt")
        fan_out = ForEach(**for_each)
        if fan_out.parse not in ITEM_PARSERS or fan_out.max_items < 1:
            raise ValueError(f"{where}: for_each needs a known parse ({sorted(ITEM_PARSERS)}) and max_items >= 1")
    return Step(name=str(name), prompt=prompt, for_each=fan_out, compute=compute, stop=_stops(raw.get("stop"), where))


def _stops(raw: Any, where: str) -> tuple[str, ...]:
    """A step's `stop` strings: absent, or a list of non-empty strings (one line of error otherwise)."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple) or not all(isinstance(stop, str) and stop for stop in raw):
        raise ValueError(f"{where}: stop must be a list of non-empty strings, got {raw!r}")
    return tuple(dict.fromkeys(raw))  # in order, each once


def load_method(path: Path) -> Method:
    data = yaml.safe_load(path.read_text())
    if not data.get("description"):
        raise ValueError(f"{path}: a method file needs a one-line description")
    return method_from_definition(data, str(path))


def _load_all() -> dict[str, Method]:
    methods = (load_method(path) for path in sorted(PROMPTS_DIR.glob("*.yaml")))
    return {method.name: method for method in methods}


METHODS: dict[str, Method] = _load_all()


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        hint = " (custom needs its steps: pass the method spec, not its name)" if name == CUSTOM else ""
        raise ValueError(f"unknown method {name!r}; choose one of {sorted([*METHODS, CUSTOM])}{hint}") from None


def resolve_method(method: str | dict[str, Any]) -> Method:
    """A built-in method by name, or a job spec's `method` section (a MethodSpec dump, custom included)."""
    if isinstance(method, str):
        return get_method(method)
    if method["name"] == CUSTOM:
        return method_from_definition({**method, "description": CUSTOM_DESCRIPTION}, "method (custom)")
    builtin = get_method(method["name"])
    extractor = method.get("extractor")
    return Method(builtin.name, builtin.description, builtin.steps, Extractor(**extractor)) if extractor else builtin


def list_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every method a job spec may name, sorted."""
    return sorted([*((name, method.description) for name, method in METHODS.items()), (CUSTOM, CUSTOM_DESCRIPTION)])
