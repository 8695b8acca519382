"""Run a method's prompt program against any generation backend.

The backend is a narrow Protocol (one batched call: prompts in, n completions per prompt out), so the
vLLM replica, a test double, or another engine all plug in. Each step is one batched call over every
input's chains (and, for a fan-out step, every item of every chain), which keeps the engine's batch full
for multi-step methods. Computed steps run here, without a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from engine.methods import COMPUTED_STEPS, ITEM_PARSERS, Method, Step


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


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], request: SamplingRequest, adapter: str | None = None
    ) -> list[list[Completion]]:
        """One chat-formatted user turn per prompt; exactly `request.n` completions per prompt, in order."""
        ...


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
    generator: Generator,
    method: Method,
    contexts: Sequence[dict[str, Any]],
    request: SamplingRequest,
    adapter: str | None = None,
) -> list[list[Chain]]:
    """For each input context, `request.n` chains that each ran every step of the method."""
    if not contexts:
        return []
    first_prompts = [method.render(0, context) for context in contexts]
    first = generator.generate(first_prompts, request, adapter)
    _check_shape(first, len(contexts), request.n)
    chains = [
        [Chain({method.steps[0].name: c.text}, c.num_tokens) for c in completions] for completions in first
    ]
    follow_up = SamplingRequest(n=1, temperature=request.temperature, top_p=request.top_p, max_tokens=request.max_tokens)
    flat = [(context, chain) for context, per_input in zip(contexts, chains) for chain in per_input]
    for step_index in range(1, len(method.steps)):
        step = method.steps[step_index]
        if step.compute is not None:
            compute = COMPUTED_STEPS[step.compute]
            for context, chain in flat:
                chain.steps[step.name] = compute({**context, **chain.steps})
            continue
        # One batched call per step: every chain's prompt (every item's, for a fan-out step) at once.
        calls = [(chain, {**context, **chain.steps, **item}) for context, chain in flat
                 for item in _items(step, chain)]
        prompts = [method.render(step_index, variables) for _, variables in calls]
        outputs = generator.generate(prompts, follow_up, adapter) if prompts else []
        _check_shape(outputs, len(prompts), 1)
        if step.for_each is not None:
            for _, chain in flat:
                chain.steps[step.name] = []
        for (chain, _), (completion,) in zip(calls, outputs):
            if step.for_each is not None:
                chain.steps[step.name].append(completion.text)
            else:
                chain.steps[step.name] = completion.text
            chain.num_tokens += completion.num_tokens
    return chains


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
        raise RuntimeError(
            f"generator returned {[len(o) for o in outputs]} completions for {prompts} prompts x n={n}"
        )
