"""Consistency criteria: the decision rules as pure functions, the row contract end to end against a
scripted backend, and the curated row layout."""

import json

import pyarrow as pa
import pytest

from s2d.engine.core.criteria import check_compatibility, perturbation_decision, usc_decision, usc_prompt
from s2d.engine.core.methods import get_method
from s2d.engine.core.program import Completion, SamplingRequest
from s2d.engine.core.tasks import get_task
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import generate_for_curation
from s2d.engine.data.shards import CURATED_SCHEMA


@pytest.mark.parametrize(
    "variants, per_variant, answer, reason",
    [
        ([["A", "A"], ["A", "B", "A"]], False, "A", None),
        ([["A", "A"], ["B", "B"]], False, None, "variants_disagree"),
        ([["A", "B"], ["A", "A"]], False, None, "variant_tie"),  # a tied variant has no answer
        ([[None, None], ["A", "A"]], False, None, "variant_no_answer"),
        ([["A", "A", "B"], ["A", "A", "C", "D", "B"]], False, "A", None),  # plurality per variant (2 of 5)
        ([["A", "A", "B"], ["A", "A", "C", "D", "B"]], True, None, "variant_below_threshold"),  # 2/5 is not > 0.5
    ],
)
def test_perturbation_rule(variants, per_variant, answer, reason):
    decision = perturbation_decision(variants, threshold=0.5, per_variant_majority=per_variant)
    assert (decision.answer, decision.reason, decision.criterion) == (answer, reason, "perturbation")
    assert decision.num_samples == sum(map(len, variants))
    if answer:
        assert decision.votes == sum(v.count(answer) for v in variants)


def test_perturbation_counts_pool_all_variants_and_detail_names_the_variant():
    decision = perturbation_decision([["A", "A"], ["B", "B", "B"]], 0.5, False)
    assert decision.counts == {"B": 3, "A": 2} and decision.votes == 3
    assert "'A', 'B'" in decision.detail
    tied = perturbation_decision([["A", "A"], ["A", "B"]], 0.5, False)
    assert tied.detail.startswith("variant 1 of 2")


@pytest.mark.parametrize(
    "answers, choice, answer, reason, votes",
    [
        (["12", "12", "7"], 0, "12", None, 2),
        (["12", "12", "7"], 2, "7", None, 1),  # USC keeps the chosen answer even against the plurality
        (["12", None, "7"], 1, None, "no_answer", 0),
        (["12", "12", "7"], None, None, "usc_no_choice", 0),
        (["12", "12", "7"], 5, None, "usc_no_choice", 0),
    ],
)
def test_usc_rule(answers, choice, answer, reason, votes):
    decision = usc_decision(answers, choice)
    assert (decision.answer, decision.reason, decision.votes, decision.criterion) == (answer, reason, votes, "usc")


BASE = {"input_id": "i1", "shard_id": 0, "prompt": "P"}


def _curate_one(row, **criterion):
    """One generated row through the batch path."""
    (curated,) = curate_generated(pa.Table.from_pylist([row]), **criterion).to_pylist()
    return curated


def test_majority_row_layout_and_values():
    row = {**BASE, "sample_texts": ["Answer: abcd", "Answer: abcd", "Answer: x"], "sample_tokens": [3, 4, 5]}
    ours = _curate_one(row, task="last_letter", method="rar2", model="m", threshold=0.5)
    assert ours == {
        "input_id": "i1",
        "shard_id": 0,
        "prompt": "P",
        "status": "accepted",
        "answer": "abcd",
        "votes": 2,
        "num_samples": 3,
        "agreement": 2 / 3,
        "reason": None,
        "detail": "",
        "answer_counts": [{"answer": "abcd", "votes": 2}, {"answer": "x", "votes": 1}],
        "method": "rar2",
        "model": "m",
        "system2_tokens": 4.0,
        "criterion": "majority",
        "source_row": None,
        "raw": None,
        "samples": None,
    }
    rejected = _curate_one(
        {**row, "sample_texts": ["Answer: ab", "Answer: cd"]},
        task="last_letter",
        method="rar2",
        model="m",
        threshold=0.5,
    )
    assert (rejected["status"], rejected["reason"], rejected["criterion"]) == ("rejected", "tie", "majority")


def test_custom_extractor_is_used_for_answers():
    row = {**BASE, "sample_texts": ["Final: yes", "blah Final: yes"], "sample_tokens": [1, 1]}
    curated = _curate_one(
        row, task="coin_flip", method="custom", model="m", extractor={"kind": "regex", "pattern": r"Final: (\w+)"}
    )
    assert curated["answer"] == "yes" and curated["votes"] == 2


def test_perturbation_row_inverts_each_variant_before_agreeing():
    row = {
        **BASE,
        "sample_texts": ["Answer: A", "Answer: A"],
        "sample_tokens": [10, 10],
        "variant_texts": [["Answer: A", "Answer: A"], ["Answer: B", "Answer: tie"]],
        "variant_tokens": [[10, 10], [20, 20]],
        "variant_inverse": ["{}", json.dumps({"A": "B", "B": "A"})],
    }
    curated = _curate_one(row, task="pairwise_judge", method="bsm", model="m", rule="perturbation")
    assert curated["status"] == "rejected" and curated["reason"] == "variant_tie"
    row["variant_texts"][1] = ["Answer: B", "Answer: B"]  # "B" after the swap is "A" before it
    curated = _curate_one(row, task="pairwise_judge", method="bsm", model="m", rule="perturbation")
    assert (curated["status"], curated["answer"], curated["votes"], curated["num_samples"]) == ("accepted", "A", 4, 4)
    assert curated["criterion"] == "perturbation" and curated["system2_tokens"] == 15.0
    assert curated["answer_counts"] == [{"answer": "A", "votes": 4}]


def test_usc_row_charges_the_judge_call_to_the_samples():
    row = {
        **BASE,
        "sample_texts": ["Answer: 12", "Answer: 7"],
        "sample_tokens": [10, 20],
        "usc_choice": 1,
        "usc_tokens": 6,
    }
    curated = _curate_one(row, task="arithmetic", method="cot", model="m", rule="usc")
    assert (curated["answer"], curated["criterion"], curated["system2_tokens"]) == ("7", "usc", 18.0)
    curated = _curate_one({**row, "usc_choice": -1}, task="arithmetic", method="cot", model="m", rule="usc")
    assert curated["reason"] == "usc_no_choice"
    assert curated["answer_counts"] == [{"answer": "12", "votes": 1}, {"answer": "7", "votes": 1}]


def test_every_rule_gives_the_one_curated_schema():
    majority = {**BASE, "sample_texts": ["Answer: 12"], "sample_tokens": [3]}
    for row, rule in [(majority, "majority"), ({**majority, "usc_choice": 0, "usc_tokens": 2}, "usc")]:
        table = curate_generated(pa.Table.from_pylist([row]), task="arithmetic", method="cot", model="m", rule=rule)
        assert table.schema == CURATED_SCHEMA


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown consistency rule"):
        _curate_one(
            {**BASE, "sample_texts": [], "sample_tokens": []}, task="last_letter", method="m", model="m", rule="vibes"
        )


class Scripted:
    """Answers every prompt with a fixed text; records what it was asked."""

    def __init__(self, text="Answer: A"):
        self.text, self.calls = text, []

    def generate(self, prompts, request, adapter=None):
        self.calls.append((list(prompts), request))
        if "most consistent response" in prompts[0]:
            return [[Completion("The most consistent response is Response 2", 9)] for _ in prompts]
        return [[Completion(self.text, 4)] * request.n for _ in prompts]


def _rows(task_name, count):
    task = get_task(task_name)
    return [
        {
            "input_id": item.input_id,
            "shard_id": 3,
            "question": item.question,
            "prompt": task.system1_prompt(item.question),
            "fields": json.dumps(item.fields),
        }
        for item in task.generate(count, 0, "train")
    ]


def test_generate_for_perturbation_runs_k_variants_in_one_batch():
    gen, task = Scripted(), get_task("multiple_choice")
    rows = _rows("multiple_choice", 2)
    columns = generate_for_curation(
        gen,
        get_method("system1"),
        task,
        rows,
        SamplingRequest(n=2),
        rule="perturbation",
        perturbation="shuffle_options",
        variants=3,
        seed=0,
    )
    ((prompts, request),) = gen.calls
    assert len(prompts) == 2 * 3 and request.n == 2
    assert prompts[0] == rows[0]["prompt"] and prompts[1] != prompts[0]  # variant 0 is the input's own prompt
    assert [len(texts) for texts in columns["variant_texts"]] == [3, 3]
    assert columns["sample_texts"] == [texts[0] for texts in columns["variant_texts"]]
    assert all(
        json.loads(inverse[0]) == {} and len(json.loads(inverse[1])) == 4 for inverse in columns["variant_inverse"]
    )
    curated = _curate_one(
        {k: v[0] for k, v in columns.items()}, task="multiple_choice", method="system1", model="m", rule="perturbation"
    )
    # The model always answers "A": mapped back, the variants name different options, so the input is rejected.
    assert curated["status"] == "rejected" and curated["reason"] == "variants_disagree"


def test_generate_for_bsm_passes_the_fields_to_the_templates():
    gen = Scripted("1. Accuracy")
    rows = _rows("pairwise_judge", 1)
    columns = generate_for_curation(
        gen,
        get_method("bsm"),
        get_task("pairwise_judge"),
        rows,
        SamplingRequest(n=1),
        rule="perturbation",
        perturbation="swap_responses",
        variants=2,
    )
    branch_prompts = gen.calls[0][0]
    fields = json.loads(rows[0]["fields"])
    assert fields["response_a"] in branch_prompts[0] and branch_prompts[0].index(fields["response_a"]) < branch_prompts[
        0
    ].index(fields["response_b"])
    assert branch_prompts[1].index(fields["response_b"]) < branch_prompts[1].index(fields["response_a"])  # swapped
    assert all(text.endswith("Answer: none") for texts in columns["variant_texts"][0] for text in texts)


def test_generate_for_usc_makes_one_greedy_judge_call_per_input():
    gen = Scripted()
    rows = _rows("arithmetic", 2)
    columns = generate_for_curation(
        gen, get_method("cot"), get_task("arithmetic"), rows, SamplingRequest(n=3), rule="usc"
    )
    judge_prompts, judge_request = gen.calls[-1]
    assert len(judge_prompts) == 2 and judge_request.n == 1 and judge_request.temperature == 0.0
    assert "Response 3: Answer: A" in judge_prompts[0] and "Response 4" not in judge_prompts[0]
    assert columns["usc_choice"] == [1, 1] and columns["usc_tokens"] == [9, 9]


def test_generate_for_majority_keeps_the_original_contract():
    gen = Scripted()
    rows = _rows("last_letter", 2)
    columns = generate_for_curation(gen, get_method("rar1"), get_task("last_letter"), rows, SamplingRequest(n=2))
    assert set(columns) == {"input_id", "shard_id", "prompt", "sample_texts", "sample_tokens"}
    assert columns["shard_id"] == [3, 3] and columns["sample_tokens"] == [[4, 4], [4, 4]]


def test_usc_prompt_numbers_from_one_and_keeps_each_responses_tail():
    prompt = usc_prompt("Q?", ["x" * 1000 + "Answer: 5", "Answer: 6"])
    assert prompt.startswith("I have generated the following responses to the question: Q?")
    assert "Response 1: " + "x" * 391 + "Answer: 5" in prompt and "Response 2: Answer: 6" in prompt
    assert "x" * 392 not in prompt


@pytest.mark.parametrize(
    "task, method, rule, perturbation, message",
    [
        ("last_letter", "bsm", "majority", None, "reads input fields"),
        ("pairwise_judge", "bsm", "perturbation", None, "needs curate.perturbation"),
        ("pairwise_judge", "bsm", "majority", "swap_responses", "only used by rule perturbation"),
        ("coin_flip", "rar2", "perturbation", "shuffle_options", "needs a task with fields"),
        ("coin_flip", "rar2", "perturbation", "nope", "unknown perturbation"),
    ],
)
def test_incompatible_jobs_are_refused(task, method, rule, perturbation, message):
    with pytest.raises(ValueError, match=message):
        check_compatibility(task, method, rule, perturbation)
    check_compatibility("pairwise_judge", "bsm", "perturbation", "swap_responses")


def test_usc_prompt_shares_a_total_budget_between_many_responses():
    prompt = usc_prompt("Q?", ["y" * 1000] * 12)
    assert prompt.count("Response 12: " + "y" * 200 + "\n") == 1 and "y" * 201 not in prompt


def test_input_context_carries_the_fields_bsm_reads():
    from s2d.engine.core.criteria import input_context

    task = get_task("pairwise_judge")
    item = task.generate(1, 0, "train")[0]
    context = input_context(task, item)
    assert get_method("bsm").required_fields <= set(context)
    assert context["system1_prompt"] == task.system1_prompt(item.question) and context["question"] == item.question


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.name=bsm"], "reads input fields"),
        (["task.name=pairwise_judge", "method.name=bsm", "curate.rule=perturbation"], "needs curate.perturbation"),
        (["curate.rule=perturbation", "curate.perturbation=swap_responses"], "needs a task with fields"),
        (["curate.rule=perturbation", "curate.perturbation=rename_entities", "curate.variants=1"], "curate.variants"),
        (["curate.rule=vote"], "curate.rule"),
        (["method.name=custom"], "method.steps is required"),
        (["method.steps=[{name: a, prompt: x}]"], "only for it"),
        (["method.name=custom", "method.steps=[{name: a, prompt: '{{ question'}]"], "template error"),
        (
            ["method.name=custom", "method.steps=[{name: a, prompt: '{{ question }}'}]", "method.extractor.kind=regex"],
            "needs a pattern",
        ),
    ],
)
def test_job_specs_with_bad_methods_or_criteria_are_refused_with_a_clear_message(overrides, message):
    from s2d.engine.core.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match=message):
        parse_spec({"model": "m"}, overrides)


def test_custom_method_spec_round_trips_to_the_replica_kwargs():
    from s2d.engine.core.methods import resolve_method
    from s2d.engine.core.spec import parse_spec

    spec = parse_spec(
        {"model": "m"},
        [
            "method.name=custom",
            "method.steps=[{name: a, prompt: '{{ question }} go'}]",
            "method.extractor.kind=last_line",
        ],
    )
    method = resolve_method(spec.method.model_dump())
    assert method.render(0, {"question": "Q", "system1_prompt": "S"}) == "Q go"
    assert method.extract_answer("x\ny") == "y"


def test_generation_refuses_an_unknown_rule_before_any_call():
    gen = Scripted()
    with pytest.raises(ValueError, match="unknown consistency rule"):
        generate_for_curation(
            gen, get_method("rar1"), get_task("last_letter"), _rows("last_letter", 1), SamplingRequest(), rule="vibes"
        )
    assert gen.calls == []


def test_a_batch_with_no_rows_gives_empty_columns_for_every_rule():
    for rule, extra in (("majority", {}), ("usc", {}), ("perturbation", {"perturbation": "rename_entities"})):
        columns = generate_for_curation(
            Scripted(), get_method("rar1"), get_task("last_letter"), [], SamplingRequest(), rule=rule, **extra
        )
        assert columns and all(values == [] for values in columns.values())
