"""Run a method's prompt program against any generation backend.

Two backend forms, both narrow Protocols, so the vLLM replica, a test double or another engine plug in:

- `AsyncGenerator` (one prompt per call, many calls in flight: an async engine). Chains flow: each
  sample's next call (or its fan-out calls) is submitted the moment its previous call returns, so the
  engine's running batch never waits at a step boundary for the batch's longest sample.
- `Generator` (one blocking call over a batch of prompts). Each step is one call over every chain of the
  batch (every item of every chain for a fan-out step): step k+1 starts when all of step k has finished.
  `StepBarrier` forces this form on an async backend, to measure what flowing chains gain.

Computed steps run inline, without a call. Either way the result is, per input, exactly n chains in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from s2d.engine.core.methods import COMPUTED_STEPS, ITEM_PARSERS, Method, Step

T = TypeVar("T")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int


@dataclass(frozen=True)
class SamplingRequest:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()  # generation ends where one of these first appears; the text leaves it out


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        """One chat-formatted user turn per prompt; exactly `request.n` completions per prompt, in order."""
        ...


@runtime_checkable
class AsyncGenerator(Protocol):
    async def complete(self, prompt: str, request: SamplingRequest, adapter: str | None = None) -> list[Completion]:
        """One chat-formatted user turn; exactly `request.n` completions, in order."""
        ...

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that awaits `complete` on the backend's event loop, blocking until it returns."""
        ...


class StepBarrier:
    """A backend seen only through its batched `generate`: `run_method` then runs step by step over the batch
    (the path before chains flowed), for benchmarks that measure the difference."""

    def __init__(self, generator: Generator):
        self._generator = generator

    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        return self._generator.generate(prompts, request, adapter)


@dataclass
class Chain:
    """One sample's path through the method's steps: each step's text (a list of texts for a fan-out step)."""

    steps: dict[str, str | list[str]] = field(default_factory=dict)
    num_tokens: int = 0  # generated tokens of every LLM call of this sample, fan-out calls included

    @property
    def final_text(self) -> str:
        last = next(reversed(self.steps.values()), "")
        return last if isinstance(last, str) else "\n\n".join(last)


def run_method(
    generator: Generator | AsyncGenerator,
    method: Method,
    contexts: Sequence[dict[str, Any]],
    request: SamplingRequest,
    adapter: str | None = None,
) -> list[list[Chain]]:
    """For each input context, `request.n` chains that each ran every step of the method."""
    if not contexts:
        return []
    if isinstance(generator, AsyncGenerator):
        return generator.run(run_method_async(generator, method, contexts, request, adapter))
    first = generator.generate(
        [method.render(0, context) for context in contexts], _for_step(request, method.steps[0]), adapter
    )
    _check_shape(first, len(contexts), request.n)
    chains = [_first_chains(method, completions) for completions in first]
    follow_up = _follow_up(request)
    flat = [(context, chain) for context, per_input in zip(contexts, chains) for chain in per_input]
    for step_index in range(1, len(method.steps)):
        step = method.steps[step_index]
        if step.compute is not None:
            for context, chain in flat:
                _compute(step, context, chain)
            continue
        # One batched call per step: every chain's prompt (every item's, for a fan-out step) at once.
        calls = [
            (chain, prompt) for context, chain in flat for prompt in _step_prompts(method, step_index, context, chain)
        ]
        sampling = _for_step(follow_up, step)
        outputs = generator.generate([prompt for _, prompt in calls], sampling, adapter) if calls else []
        _check_shape(outputs, len(calls), 1)
        per_chain: dict[int, list[Completion]] = {id(chain): [] for _, chain in flat}
        for (chain, _), (completion,) in zip(calls, outputs):
            per_chain[id(chain)].append(completion)
        for _, chain in flat:
            _record(step, chain, per_chain[id(chain)])
    return chains


async def run_method_async(
    generator: AsyncGenerator,
    method: Method,
    contexts: Sequence[dict[str, Any]],
    request: SamplingRequest,
    adapter: str | None = None,
) -> list[list[Chain]]:
    """`run_method` with flowing chains: every input's first call at once, then each chain on its own."""
    first, follow_up = _for_step(request, method.steps[0]), _follow_up(request)

    async def one_call(prompt: str, sampling: SamplingRequest) -> list[Completion]:
        completions = await generator.complete(prompt, sampling, adapter)
        _check_shape([completions], 1, sampling.n)
        return completions

    async def continue_chain(context: dict[str, Any], chain: Chain) -> None:
        for step_index in range(1, len(method.steps)):
            step = method.steps[step_index]
            if step.compute is not None:
                _compute(step, context, chain)
                continue
            sampling = _for_step(follow_up, step)
            outputs = await all_of(
                one_call(prompt, sampling) for prompt in _step_prompts(method, step_index, context, chain)
            )
            _record(step, chain, [completion for (completion,) in outputs])

    async def one_input(context: dict[str, Any]) -> list[Chain]:
        chains = _first_chains(method, await one_call(method.render(0, context), first))
        await all_of(continue_chain(context, chain) for chain in chains)
        return chains

    return await all_of(one_input(context) for context in contexts)


async def all_of(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Every result, in order; the first failure cancels the rest (so no orphaned requests keep the engine busy)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coroutine) for coroutine in coroutines]
    return [task.result() for task in tasks]


def _first_chains(method: Method, completions: list[Completion]) -> list[Chain]:
    return [Chain({method.steps[0].name: c.text}, c.num_tokens) for c in completions]


def _follow_up(request: SamplingRequest) -> SamplingRequest:
    # Later steps continue one chain each: one sample per call.
    return replace(request, n=1)


def _for_step(request: SamplingRequest, step: Step) -> SamplingRequest:
    """The request a step's calls are sent with: the caller's stops, then the step's own."""
    if not step.stop:
        return request
    return replace(request, stop=tuple(dict.fromkeys((*request.stop, *step.stop))))


def _compute(step: Step, context: dict[str, Any], chain: Chain) -> None:
    chain.steps[step.name] = COMPUTED_STEPS[step.compute]({**context, **chain.steps})


def _step_prompts(method: Method, step_index: int, context: dict[str, Any], chain: Chain) -> list[str]:
    """The prompts a step sends for one chain: one, or one per parsed item of a fan-out step."""
    step = method.steps[step_index]
    return [method.render(step_index, {**context, **chain.steps, **item}) for item in _items(step, chain)]


def _record(step: Step, chain: Chain, completions: list[Completion]) -> None:
    texts = [completion.text for completion in completions]
    chain.steps[step.name] = texts if step.for_each is not None else texts[0]
    chain.num_tokens += sum(completion.num_tokens for completion in completions)


def _items(step: Step, chain: Chain) -> list[dict[str, str]]:
    """The extra variables of each call a step makes for one chain: one call, or one per parsed item."""
    if step.for_each is None:
        return [{}]
    fan = step.for_each
    source = chain.steps[fan.step]
    text = source if isinstance(source, str) else "\n".join(source)
    return [{fan.item: item} for item in ITEM_PARSERS[fan.parse](text, fan.max_items)]


def _check_shape(outputs: list[list[Completion]], prompts: int, n: int) -> None:
    # A backend that drops or merges samples would silently bias the vote; refuse it here.
    if len(outputs) != prompts or any(len(per_prompt) != n for per_prompt in outputs):
        raise RuntimeError(f"generator returned {[len(o) for o in outputs]} completions for {prompts} prompts x n={n}")
