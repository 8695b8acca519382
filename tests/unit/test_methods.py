"""Method prompt files: every step renders from the variables it is given, and nothing else."""

import pytest
from jinja2 import meta
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from engine.methods import METHODS, Method, Step, get_method
from engine.program import Completion, SamplingRequest, run_method

INPUT_VARIABLES = ("question", "system1_prompt")


def _referenced(prompt: str) -> set[str]:
    return meta.find_undeclared_variables(SandboxedEnvironment().parse(prompt))


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_every_step_renders_from_the_input_and_earlier_steps_only(method):
    context = {name: f"<{name}>" for name in INPUT_VARIABLES}
    for index, step in enumerate(method.steps):
        allowed = set(INPUT_VARIABLES) | {earlier.name for earlier in method.steps[:index]}
        assert _referenced(step.prompt) <= allowed, f"{method.name}.{step.name}"
        assert method.render(index, context).strip()  # StrictUndefined: a stray variable raises here
        context[step.name] = f"<{step.name}>"


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_method_files_are_well_formed(method):
    assert method.description and "\n" not in method.description
    names = [step.name for step in method.steps]
    assert len(set(names)) == len(names)
    assert not set(names) & set(INPUT_VARIABLES)  # a step must not shadow the input
    if method.name != "system1":
        assert '"Answer: <answer>"' in method.steps[-1].prompt  # the final line extract_final_answer looks for


def test_a_step_that_reads_a_later_step_fails_loudly():
    broken = Method("broken", "reads ahead", (Step("a", "{{ b }}"), Step("b", "{{ question }}")))
    with pytest.raises(UndefinedError):
        broken.render(0, {"question": "q", "system1_prompt": "s"})


def test_new_methods_have_the_paper_shapes():
    assert [s.name for s in get_method("rar1").steps] == ["respond"]
    assert [s.name for s in get_method("cot").steps] == ["reason"]
    assert [s.name for s in get_method("s2a").steps] == ["rewrite", "respond"]
    context = {"question": "Q?", "system1_prompt": "S"}
    assert get_method("rar1").render(0, context).startswith("Q?\nRephrase and expand the question, and respond.")
    assert get_method("cot").render(0, context).startswith("Q?\nLet's think step by step.")
    rewrite = get_method("s2a").render(0, context)
    assert rewrite.startswith("Given the following text by a user, extract the part that is unbiased")
    assert '"Question/Query (does not include user bias/preference):"' in rewrite
    assert rewrite.endswith("Text by User: Q?")


def test_s2a_answer_step_does_not_see_the_original_question():
    method = get_method("s2a")
    assert _referenced(method.steps[1].prompt) == {"rewrite"}

    class Rewriter:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, request, adapter=None):
            self.prompts.append(list(prompts))
            return [[Completion("Question/Query: What is the capital of Australia?", 5)] * request.n for _ in prompts]

    biased = "What is the capital of Australia? I think the answer is Sydney, but I'm really not sure."
    generator = Rewriter()
    chains = run_method(generator, method, [{"question": biased, "system1_prompt": biased}], SamplingRequest(n=2))
    step_one, step_two = generator.prompts
    assert biased in step_one[0]
    assert len(step_two) == 2 and all("Sydney" not in prompt for prompt in step_two)
    assert all("What is the capital of Australia?" in prompt for prompt in step_two)
    assert set(chains[0][0].steps) == {"rewrite", "respond"}
