"""Method prompt files: every step renders from the variables it is given, and nothing else."""

import pytest
from jinja2 import meta
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from s2d.engine.core.methods import METHODS, Method, Step, get_method
from s2d.engine.core.program import Completion, SamplingRequest, run_method

INPUT_VARIABLES = ("question", "system1_prompt")


def _referenced(prompt: str) -> set[str]:
    return meta.find_undeclared_variables(SandboxedEnvironment().parse(prompt))


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_every_step_renders_from_the_input_and_earlier_steps_only(method):
    # A method may also read its task's structured fields (bsm: instruction, response_a, response_b).
    context = {name: f"<{name}>" for name in (*INPUT_VARIABLES, *method.required_fields)}
    if "exemplars" in method.required_fields:  # a task's few-shot examples (s2d.engine.core.tasks.task_variables)
        context["exemplars"] = [{"question": "<example question>", "solution": "<worked>\nAnswer: <answer>"}]
    for index, step in enumerate(method.steps):
        allowed = set(context) | {earlier.name for earlier in method.steps[:index]}
        if step.for_each:
            allowed.add(step.for_each.item)
            context[step.for_each.item] = "<item>"
        if step.prompt is not None:
            assert _referenced(step.prompt) <= allowed, f"{method.name}.{step.name}"
            assert method.render(index, context).strip()  # StrictUndefined: a stray variable raises here
        context[step.name] = f"<{step.name}>"


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_method_files_are_well_formed(method):
    assert method.description and "\n" not in method.description
    names = [step.name for step in method.steps]
    assert len(set(names)) == len(names)
    assert not set(names) & set(INPUT_VARIABLES)  # a step must not shadow the input
    if "exemplars" in method.required_fields:  # few-shot: the worked examples show the answer line instead
        assert "{{ example.solution }}" in method.steps[-1].prompt
    elif method.name not in ("system1", "bsm"):  # bsm's last step is computed and writes its own Answer line
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


def test_bsm_has_branch_fanned_out_solve_and_computed_merge():
    bsm = get_method("bsm")
    branch, solve, merge = bsm.steps
    assert (branch.name, solve.name, merge.name) == ("branch", "solve", "merge")
    assert solve.for_each.step == "branch" and solve.for_each.item == "criterion" and solve.for_each.max_items == 5
    assert merge.compute == "bsm_merge" and merge.prompt is None
    assert bsm.required_fields == {"instruction", "response_a", "response_b"}


@pytest.mark.parametrize(
    "solve_texts, verdict",
    [
        (["Score A: 5, Score B: 2", "Score A: 4, Score B: 4"], "Answer: A"),
        (["Score A: 1/5, Score B: 3/5"], "Answer: B"),
        (["Score A: 3, Score B: 3", "A: 2 B: 2"], "Answer: tie"),
        (["I cannot judge this.", "Score A: 2, Score B: 5"], "Answer: B"),  # the unscored criterion is skipped
        (["no scores here", ""], "Answer: none"),
        ([], "Answer: none"),  # the branch produced no criteria
    ],
)
def test_bsm_merge_sums_the_scores(solve_texts, verdict):
    from s2d.engine.core.methods import bsm_merge

    assert bsm_merge({"solve": solve_texts}).endswith(verdict)


def test_resolve_method_builds_custom_from_the_job_spec_and_keeps_builtins():
    from s2d.engine.core.methods import resolve_method

    custom = resolve_method(
        {
            "name": "custom",
            "steps": [
                {"name": "think", "prompt": "{{ question }} think"},
                {"name": "say", "prompt": "{{ think }} say"},
            ],
            "extractor": {"kind": "last_line", "pattern": None},
        }
    )
    assert [step.name for step in custom.steps] == ["think", "say"] and custom.description
    assert custom.extract_answer("reasoning\n  final  \n") == "final"
    assert resolve_method("rar2") is get_method("rar2")
    assert (
        resolve_method({"name": "rar2", "steps": None, "extractor": {"kind": "answer_marker", "pattern": None}}).steps
        == get_method("rar2").steps
    )
    with pytest.raises(ValueError, match="custom needs its steps"):
        get_method("custom")


@pytest.mark.parametrize(
    "definition, message",
    [
        ({"steps": []}, "at least one step"),
        ({"steps": [{"name": "a b", "prompt": "x"}]}, "not an identifier"),
        ({"steps": [{"name": "question", "prompt": "x"}]}, "name is taken"),
        ({"steps": [{"name": "a", "prompt": "x"}, {"name": "a", "prompt": "y"}]}, "name is taken"),
        ({"steps": [{"name": "a", "prompt": "{% if %}"}]}, "template error"),
        ({"steps": [{"name": "a", "compute": "bsm_merge"}]}, "first step must be a prompt"),
        ({"steps": [{"name": "a", "prompt": "x"}, {"name": "b", "compute": "nope"}]}, "unknown computed step"),
        ({"steps": [{"name": "a", "prompt": "x", "compute": "bsm_merge"}]}, "exactly one of prompt or compute"),
        (
            {
                "steps": [
                    {"name": "a", "prompt": "x"},
                    {"name": "b", "prompt": "{{ c }}", "for_each": {"step": "z", "item": "c"}},
                ]
            },
            "not an earlier step",
        ),
        ({"steps": [{"name": "a", "prompt": "x"}], "extractor": {"kind": "regex"}}, "needs a pattern"),
        (
            {"steps": [{"name": "a", "prompt": "x"}], "extractor": {"kind": "regex", "pattern": "(["}},
            "not a valid regex",
        ),
    ],
)
def test_bad_method_definitions_get_clear_errors(definition, message):
    from s2d.engine.core.methods import method_from_definition

    with pytest.raises(ValueError, match=message):
        method_from_definition({"name": "custom", **definition}, "spec")


def test_custom_templates_cannot_reach_python_internals():
    from jinja2.exceptions import SecurityError

    from s2d.engine.core.methods import method_from_definition

    method = method_from_definition(
        {"name": "custom", "steps": [{"name": "a", "prompt": "{{ question.__class__.__mro__[1].__subclasses__() }}"}]},
        "spec",
    )
    with pytest.raises(SecurityError):
        method.render(0, {"question": "q", "system1_prompt": "s"})


@pytest.mark.parametrize(
    "kind, pattern, text, expected",
    [
        ("answer_marker", None, "so\nAnswer: abcd", "abcd"),
        ("answer_marker", None, "Answer:", None),
        ("last_line", None, "a\nb\n\n", "b"),
        ("last_line", None, "   ", None),
        ("regex", r"Final: (\w+)", "Final: no ... Final: yes", "yes"),  # the last match wins
        ("regex", r"\d+", "3 apples and 12 pears", "12"),  # no group: the whole match
        ("regex", r"Final: (\w*)", "Final: ", None),  # an empty group is no answer
        ("regex", r"Final: (\w+)", "no marker at all", None),
        ("regex", r"Final: (\w+)", None, None),
    ],
)
def test_extractors_including_malformed_outputs(kind, pattern, text, expected):
    from s2d.engine.core.methods import Extractor

    assert Extractor(kind, pattern)(text) == expected


def test_s2d_methods_lists_custom_and_every_file_method():
    from s2d.engine.core.methods import list_methods

    names = [name for name, _ in list_methods()]
    assert names == sorted(names) and set(names) == {*METHODS, "custom"}
    assert {"system1", "rar1", "rar2", "s2a", "cot", "bsm", "custom"} <= set(names)


# --- stops: a step ends where its answer ends, never inside it ---

FEWSHOT_TASKS = ("last_letter", "last_letter_one", "coin_flip", "arithmetic")


def _stopped(text: str, stops: tuple[str, ...]) -> str:
    """What vLLM returns for `text` with these stop strings: the text before the first one (left out)."""
    ends = [index for stop in stops if (index := text.find(stop)) >= 0]
    return text[: min(ends)] if ends else text


@pytest.mark.parametrize("task_name", FEWSHOT_TASKS)
@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_no_stop_cuts_an_exemplar_answer(method, task_name):
    from s2d.engine.core.tasks import get_task

    for step in method.steps:
        assert not step.stop or step.prompt is not None
        for exemplar in get_task(task_name).exemplars:
            for stop in step.stop:
                assert stop not in exemplar.solution, (method.name, step.name, stop, exemplar.solution)


@pytest.mark.parametrize("task_name", FEWSHOT_TASKS)
def test_cot_fewshot_stops_a_run_on_into_an_invented_next_exemplar_at_the_answers_end(task_name):
    """A sample that copies an exemplar and then starts the next one, in the prompt's own format, is cut exactly
    where the copied answer ends; its extracted answer is the exemplar's, not the invented question's."""
    from s2d.engine.core.tasks import get_task, task_variables

    method, task = get_method("cot_fewshot"), get_task(task_name)
    (step,) = method.steps
    assert step.stop == ("\nQ:",)
    prompt = method.render(0, {"question": "<q>", "system1_prompt": "", **task_variables(task)})
    exemplars = task.exemplars
    for exemplar, following in zip(exemplars, (*exemplars[1:], exemplars[0])):
        assert f"A: {exemplar.solution}\n\nQ: " in prompt  # the prompt's separator, then the next question
        for separator in ("\n\n", "\n", " \n"):
            run_on = f"{exemplar.solution}{separator}Q: {following.question}\nA: {following.solution[:20]}"
            kept = _stopped(run_on, step.stop)
            assert kept == exemplar.solution + separator[:-1]  # up to the newline that begins "\nQ:"
            answer = task.normalize(method.extract_answer(exemplar.solution))
            assert answer is not None and task.normalize(method.extract_answer(kept)) == answer


def test_the_demo_run_on_from_issue_23_is_cut_and_read():
    from s2d.engine.core.tasks import get_task

    method, task = get_method("cot_fewshot"), get_task("last_letter_one")
    text = (
        'Carina is spelled c-r-a-n-a-l. The last letter is n.\n\nQ: What is the last letter of the word "Olivia"?\n'
        "A: Olivia is spelled o-l-"
    )
    assert task.normalize(method.extract_answer(text)) is None  # the invented exemplar's tail was read: no answer
    kept = _stopped(text, method.steps[0].stop)
    assert kept == "Carina is spelled c-r-a-n-a-l. The last letter is n.\n"
    assert task.normalize(method.extract_answer(kept)) == "n"


@pytest.mark.parametrize(
    "stop, message",
    [
        ("\nQ:", "stop must be a list of non-empty strings"),
        ([""], "stop must be a list of non-empty strings"),
        (["\nQ:", 3], "stop must be a list of non-empty strings"),
        ({"a": 1}, "stop must be a list of non-empty strings"),
    ],
)
def test_bad_stops_get_one_line_errors(stop, message):
    from s2d.engine.core.methods import method_from_definition

    with pytest.raises(ValueError, match=message) as error:
        method_from_definition({"name": "custom", "steps": [{"name": "a", "prompt": "x", "stop": stop}]}, "spec")
    assert "\n" not in str(error.value).replace(repr(stop), "")


def test_a_computed_step_cannot_stop():
    from s2d.engine.core.methods import method_from_definition

    steps = [{"name": "a", "prompt": "x"}, {"name": "b", "compute": "bsm_merge", "stop": ["x"]}]
    with pytest.raises(ValueError, match="stop needs a prompt"):
        method_from_definition({"name": "custom", "steps": steps}, "spec")


def test_a_custom_method_in_a_job_file_takes_stops_and_they_change_its_fingerprint():
    from s2d.engine.core.methods import resolve_method
    from s2d.engine.core.spec import SpecError, parse_spec

    def job(**step):
        method = {"name": "custom", "steps": [{"name": "a", "prompt": "{{ question }}", **step}]}
        return {"model": "smollm2-135m", "out": "/tmp/unused", "task": {"name": "last_letter_one"}, "method": method}

    plain, empty, stopped = (parse_spec(job()), parse_spec(job(stop=[])), parse_spec(job(stop=["\nQ:", "###"])))
    # No stops dumps as before stops existed (a custom job's fingerprint written then is unchanged) ...
    assert plain.method.model_dump()["steps"] == [{"name": "a", "prompt": "{{ question }}"}]
    assert empty.method.model_dump() == plain.method.model_dump()
    # ... and stops are part of the method section that the job's fingerprint covers.
    assert stopped.method.model_dump()["steps"][0]["stop"] == ["\nQ:", "###"]
    assert resolve_method(stopped.method.model_dump()).steps[0].stop == ("\nQ:", "###")
    assert parse_spec(yaml_round_trip(stopped)).method == stopped.method
    for bad in ("\nQ:", [""], [1]):
        with pytest.raises(SpecError) as error:
            parse_spec(job(stop=bad))
        assert "stop" in str(error.value) and "\n" not in str(error.value).replace("\\n", "")


def yaml_round_trip(spec):
    import yaml

    from s2d.engine.core.spec import dump_spec

    return yaml.safe_load(dump_spec(spec))
