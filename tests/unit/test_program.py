"""The prompt-program runner against a scripted backend (pure logic; the real engine is in integration tests)."""

import pytest

from engine.methods import METHODS, get_method
from engine.program import Completion, SamplingRequest, run_method


class ScriptedGenerator:
    """Answers each prompt with its own text echoed and numbered, so chains can be traced."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, request, adapter=None):
        self.calls.append((list(prompts), request))
        return [[Completion(f"out{i}<{p[:12]}>", 3) for i in range(request.n)] for p in prompts]


def test_rar2_samples_n_in_step_one_and_continues_each_chain_once():
    gen = ScriptedGenerator()
    contexts = [{"question": "Q1", "system1_prompt": "S1"}, {"question": "Q2", "system1_prompt": "S2"}]
    chains = run_method(gen, get_method("rar2"), contexts, SamplingRequest(n=3, temperature=0.7, max_tokens=9))
    (first_prompts, first_request), (second_prompts, second_request) = gen.calls
    assert len(first_prompts) == 2 and first_request.n == 3
    assert len(second_prompts) == 6 and second_request.n == 1 and second_request.max_tokens == 9
    assert [len(per_input) for per_input in chains] == [3, 3]
    # sample j of input i answers from its own rephrasing
    assert "out1<Q1" in second_prompts[1] and "out2<Q2" in second_prompts[5]
    assert all(chain.num_tokens == 6 for per_input in chains for chain in per_input)
    assert set(chains[0][0].steps) == {"rephrase", "respond"}


def test_system1_uses_the_task_prompt():
    gen = ScriptedGenerator()
    run_method(gen, get_method("system1"), [{"question": "Q", "system1_prompt": "Q Reply."}], SamplingRequest())
    assert gen.calls[0][0] == ["Q Reply."]


def test_template_syntax_inside_input_is_inert():
    gen = ScriptedGenerator()
    run_method(gen, get_method("rar2"), [{"question": "{{ 7*7 }} {% if x %}", "system1_prompt": ""}], SamplingRequest())
    assert gen.calls[0][0][0].startswith("{{ 7*7 }} {% if x %}")


def test_backend_that_drops_samples_is_refused():
    class Dropping(ScriptedGenerator):
        def generate(self, prompts, request, adapter=None):
            return super().generate(prompts, request, adapter)[:-1]

    with pytest.raises(RuntimeError, match="completions"):
        run_method(Dropping(), get_method("system1"), [{"question": "a", "system1_prompt": "a"}] * 2, SamplingRequest())


def test_every_method_file_loads_with_steps():
    assert {"system1", "rar2"} <= set(METHODS)
    for method in METHODS.values():
        assert method.steps and method.description
