"""Run a method's prompt program against any generation backend.

The backend is a narrow Protocol (one batched call: prompts in, n completions per prompt out), so the
vLLM replica, a test double, or another engine all plug in. Each step is one batched call over every
input's chains, which keeps the engine's batch full for multi-step methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from engine.methods import Method


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
    """One sample's path through the method's steps."""

    steps: dict[str, str] = field(default_factory=dict)
    num_tokens: int = 0

    @property
    def final_text(self) -> str:
        return next(reversed(self.steps.values()), "")


def run_method(
    generator: Generator,
    method: Method,
    contexts: Sequence[dict[str, str]],
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
    for step_index in range(1, len(method.steps)):
        flat = [(context, chain) for context, per_input in zip(contexts, chains) for chain in per_input]
        prompts = [method.render(step_index, {**context, **chain.steps}) for context, chain in flat]
        outputs = generator.generate(prompts, follow_up, adapter)
        _check_shape(outputs, len(prompts), 1)
        for (_, chain), (completion,) in zip(flat, outputs):
            chain.steps[method.steps[step_index].name] = completion.text
            chain.num_tokens += completion.num_tokens
    return chains


def _check_shape(outputs: list[list[Completion]], prompts: int, n: int) -> None:
    # A backend that drops or merges samples would silently bias the vote; refuse it here.
    if len(outputs) != prompts or any(len(per_prompt) != n for per_prompt in outputs):
        raise RuntimeError(
            f"generator returned {[len(o) for o in outputs]} completions for {prompts} prompts x n={n}"
        )
