"""The prompt-program runner against a scripted backend (pure logic; the real engine is in integration tests)."""

import asyncio
import random

import pytest

from s2d.engine.core.methods import METHODS, get_method
from s2d.engine.core.program import Completion, SamplingRequest, StepBarrier, run_method


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


class JudgeGenerator(ScriptedGenerator):
    """Plans three criteria, then scores A above B on every criterion but the one about 'style'."""

    def generate(self, prompts, request, adapter=None):
        self.calls.append((list(prompts), request))
        outputs = []
        for prompt in prompts:
            if "evaluation plan" in prompt:
                text = "1. Accuracy\n2. Style\n3. Helpfulness"
            elif "criterion only: Style" in prompt:
                text = "Score A: 2, Score B: 4"
            else:
                text = "Score A: 5, Score B: 1"
            outputs.append([Completion(text, 7)] * request.n)
        return outputs


def test_bsm_fans_out_one_solve_call_per_criterion_and_merges_without_a_call():
    gen = JudgeGenerator()
    context = {"question": "Q", "system1_prompt": "S", "instruction": "I", "response_a": "ra", "response_b": "rb"}
    chains = run_method(gen, get_method("bsm"), [context], SamplingRequest(n=2, max_tokens=9))
    assert len(gen.calls) == 2  # branch, then all solve calls of all chains in one batch; merge is computed
    (branch_prompts, branch_request), (solve_prompts, solve_request) = gen.calls
    assert len(branch_prompts) == 1 and branch_request.n == 2
    assert len(solve_prompts) == 2 * 3 and solve_request.n == 1
    for chain in chains[0]:
        assert chain.steps["solve"] == ["Score A: 5, Score B: 1", "Score A: 2, Score B: 4", "Score A: 5, Score B: 1"]
        assert chain.final_text.endswith("Answer: A") and "A = 12, B = 6" in chain.final_text
        assert chain.num_tokens == 7 + 3 * 7  # every LLM call of the sample, fan-out included; merge is free


def test_fan_out_caps_items_and_survives_an_empty_plan():
    class Planner(JudgeGenerator):
        def __init__(self, plan):
            super().__init__()
            self.plan = plan

        def generate(self, prompts, request, adapter=None):
            if "evaluation plan" in prompts[0]:
                self.calls.append((list(prompts), request))
                return [[Completion(self.plan, 1)] * request.n for _ in prompts]
            return super().generate(prompts, request, adapter)

    context = {"question": "Q", "system1_prompt": "S", "instruction": "I", "response_a": "a", "response_b": "b"}
    many = Planner("\n".join(f"{i}. criterion {i}" for i in range(1, 9)))
    run_method(many, get_method("bsm"), [context], SamplingRequest(n=1))
    assert len(many.calls[1][0]) == 5  # up to five criteria
    empty = Planner("   ")
    chains = run_method(empty, get_method("bsm"), [context], SamplingRequest(n=1))
    assert len(empty.calls) == 1  # no criteria: no solve call at all
    assert chains[0][0].steps["solve"] == [] and chains[0][0].final_text.endswith("Answer: none")


class RandomLatencyGenerator:
    """The async backend form, each call taking a random time (input 0's first call the longest), so calls
    end in a different order than they began. Records the order calls returned and each call's tokens."""

    def __init__(self, seed=0):
        self.random = random.Random(seed)
        self.returned = []  # prompts, in the order their calls returned
        self.tokens = {}  # prompt -> tokens of each of its completions

    async def complete(self, prompt, request, adapter=None):
        slowest = prompt.startswith("Q0\n")
        await asyncio.sleep(0.08 if slowest else self.random.uniform(0.001, 0.03))
        self.returned.append(prompt)
        self.tokens[prompt] = self.random.randint(1, 50)
        return [Completion(f"{i}|{prompt}", self.tokens[prompt]) for i in range(request.n)]

    def run(self, coroutine):
        return asyncio.run(coroutine)


def test_chains_flow_out_of_order_and_come_back_in_order_with_their_tokens():
    gen = RandomLatencyGenerator()
    contexts = [{"question": f"Q{index}", "system1_prompt": ""} for index in range(6)]
    chains = run_method(gen, get_method("rar2"), contexts, SamplingRequest(n=3, temperature=0.7, max_tokens=9))
    first_calls = [prompt for prompt in gen.returned if not prompt.startswith("(original)")]
    second_calls = [prompt for prompt in gen.returned if prompt.startswith("(original)")]
    assert len(first_calls) == 6 and len(second_calls) == 6 * 3
    # No step barrier: chains of other inputs finished their second call before input 0's first call returned.
    assert gen.returned.index(first_calls[-1]) > gen.returned.index(second_calls[0])
    assert first_calls[-1].startswith("Q0\n")
    finished_inputs = [prompt.split("\n", 1)[0] for prompt in second_calls]
    assert finished_inputs != sorted(finished_inputs)  # chains finished out of input order
    assert [len(per_input) for per_input in chains] == [3] * 6
    for index, per_input in enumerate(chains):
        first_prompt = get_method("rar2").render(0, contexts[index])
        for sample, chain in enumerate(per_input):
            assert chain.steps["rephrase"] == f"{sample}|{first_prompt}"  # in sample order, from its own input
            second_prompt = get_method("rar2").render(1, {**contexts[index], "rephrase": chain.steps["rephrase"]})
            assert chain.steps["respond"] == f"0|{second_prompt}"  # answered from its own rephrasing
            assert chain.num_tokens == gen.tokens[first_prompt] + gen.tokens[second_prompt]


class AsyncOf:
    """A scripted batch backend seen through the async form, one prompt per call."""

    def __init__(self, generator):
        self.generator = generator

    async def complete(self, prompt, request, adapter=None):
        await asyncio.sleep(0)
        (completions,) = self.generator.generate([prompt], request, adapter)
        return completions

    def run(self, coroutine):
        return asyncio.run(coroutine)


def test_fan_out_and_computed_steps_flow_to_the_same_chains_as_the_step_barrier():
    context = {"question": "Q", "system1_prompt": "S", "instruction": "I", "response_a": "ra", "response_b": "rb"}
    request = SamplingRequest(n=2, max_tokens=9)
    barrier = run_method(StepBarrier(JudgeGenerator()), get_method("bsm"), [context] * 2, request)
    flowing_backend = AsyncOf(JudgeGenerator())
    flowing = run_method(flowing_backend, get_method("bsm"), [context] * 2, request)
    assert flowing == barrier
    # one call per prompt: 2 branch calls (n=2), then 3 solve calls for each of the 4 chains
    assert len(flowing_backend.generator.calls) == 2 + 4 * 3


def test_a_failing_call_fails_the_method_and_cancels_the_other_chains():
    class FailsOnSecondStep(RandomLatencyGenerator):
        async def complete(self, prompt, request, adapter=None):
            if prompt.startswith("(original) Q2"):
                raise RuntimeError("engine failed")
            return await super().complete(prompt, request, adapter)

    gen = FailsOnSecondStep()
    with pytest.raises(ExceptionGroup) as failure:
        run_method(
            gen,
            get_method("rar2"),
            [{"question": f"Q{i}", "system1_prompt": ""} for i in range(4)],
            SamplingRequest(n=2),
        )
    assert failure.group_contains(RuntimeError, match="engine failed")
    assert not any(prompt.startswith("(original) Q0") for prompt in gen.returned)  # cancelled, never returned


def _method_with_stops():
    from s2d.engine.core.methods import method_from_definition

    return method_from_definition(
        {
            "name": "custom",
            "steps": [
                {"name": "think", "prompt": "{{ question }} think", "stop": ["\nQ:", "###"]},
                {"name": "plain", "prompt": "{{ think }} plain"},
                {"name": "say", "prompt": "{{ think }} say", "stop": ["\nQ:"]},
            ],
        },
        "test",
    )


@pytest.mark.parametrize("form", ["batched", "flowing"])
def test_each_step_is_sent_with_its_own_stops_beside_the_callers(form):
    scripted = ScriptedGenerator()
    backend = scripted if form == "batched" else AsyncOf(scripted)
    request = SamplingRequest(n=2, temperature=0.7, max_tokens=9, stop=("END",))
    run_method(backend, _method_with_stops(), [{"question": "Q", "system1_prompt": "S"}], request)
    stops = {prompts[0].rsplit(" ", 1)[-1]: sent.stop for prompts, sent in scripted.calls}
    assert stops == {"think": ("END", "\nQ:", "###"), "plain": ("END",), "say": ("END", "\nQ:")}
    assert all(sent.n == (2 if prompts[0].endswith("think") else 1) for prompts, sent in scripted.calls)
    assert all(sent.max_tokens == 9 and sent.temperature == 0.7 for _, sent in scripted.calls)


def test_a_request_with_stops_is_hashable_for_the_backends_cache():
    assert hash(SamplingRequest(stop=("\nQ:",))) == hash(SamplingRequest(stop=("\nQ:",)))
    assert SamplingRequest().stop == ()
