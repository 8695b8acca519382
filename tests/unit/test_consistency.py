"""Consistency criteria: the decision rules as pure functions, the replica -> curation contract end to end against a
scripted backend, and the curated row layout."""

import json

import pytest

from s2d.engine.core.criteria import check_compatibility, perturbation_decision, usc_decision, usc_prompt
from s2d.engine.core.methods import get_method
from s2d.engine.core.program import Completion, SamplingRequest
from s2d.engine.core.tasks import get_task
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import GENERATED_SCHEMA, generate_for_curation, generated_table
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


def _samples(texts, tokens, variant=None):
    """A generated row's samples (GENERATED_SCHEMA), one per text."""
    return [
        {"variant": variant, "sample": index, "text": text, "tokens": count}
        for index, (text, count) in enumerate(zip(texts, tokens))
    ]


def _curate_one(row, **criterion):
    """One generated row through the batch path."""
    (curated,) = curate_generated(generated_table([row]), **criterion).to_pylist()
    return curated


def test_majority_row_layout_and_values():
    row = {**BASE, "samples": _samples(["Answer: abcd", "Answer: abcd", "Answer: x"], [3, 4, 5])}
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
        {**row, "samples": _samples(["Answer: ab", "Answer: cd"], [3, 4])},
        task="last_letter",
        method="rar2",
        model="m",
        threshold=0.5,
    )
    assert (rejected["status"], rejected["reason"], rejected["criterion"]) == ("rejected", "tie", "majority")


def test_custom_extractor_is_used_for_answers():
    row = {**BASE, "samples": _samples(["Final: yes", "blah Final: yes"], [1, 1])}
    curated = _curate_one(
        row, task="coin_flip", method="custom", model="m", extractor={"kind": "regex", "pattern": r"Final: (\w+)"}
    )
    assert curated["answer"] == "yes" and curated["votes"] == 2


def test_perturbation_row_inverts_each_variant_before_agreeing():
    own = _samples(["Answer: A", "Answer: A"], [10, 10], variant=0)
    row = {
        **BASE,
        "samples": own + _samples(["Answer: B", "Answer: tie"], [20, 20], variant=1),
        "variant_inverse": [[], [("A", "B"), ("B", "A")]],
    }
    curated = _curate_one(row, task="pairwise_judge", method="bsm", model="m", rule="perturbation")
    assert curated["status"] == "rejected" and curated["reason"] == "variant_tie"
    row["samples"] = own + _samples(["Answer: B", "Answer: B"], [20, 20], variant=1)  # "B" after the swap is "A"
    curated = _curate_one(row, task="pairwise_judge", method="bsm", model="m", rule="perturbation")
    assert (curated["status"], curated["answer"], curated["votes"], curated["num_samples"]) == ("accepted", "A", 4, 4)
    assert curated["criterion"] == "perturbation" and curated["system2_tokens"] == 15.0
    assert curated["answer_counts"] == [{"answer": "A", "votes": 4}]


def test_usc_row_charges_the_judge_call_to_the_samples():
    row = {**BASE, "samples": _samples(["Answer: 12", "Answer: 7"], [10, 20]), "judge_choice": 1, "judge_tokens": 6}
    curated = _curate_one(row, task="arithmetic", method="cot", model="m", rule="usc")
    assert (curated["answer"], curated["criterion"], curated["system2_tokens"]) == ("7", "usc", 18.0)
    curated = _curate_one({**row, "judge_choice": None}, task="arithmetic", method="cot", model="m", rule="usc")
    assert curated["reason"] == "usc_no_choice"
    assert curated["answer_counts"] == [{"answer": "12", "votes": 1}, {"answer": "7", "votes": 1}]


def test_every_rule_gives_the_one_curated_schema():
    majority = {**BASE, "samples": _samples(["Answer: 12"], [3])}
    perturbed = {
        **BASE,
        "samples": _samples(["Answer: 12"], [3], variant=0) + _samples(["Answer: 12"], [3], variant=1),
        "variant_inverse": [[], []],
    }
    for row, rule in [
        (majority, "majority"),
        ({**majority, "judge_choice": 0, "judge_tokens": 2}, "usc"),
        (perturbed, "perturbation"),
    ]:
        table = curate_generated(generated_table([row]), task="arithmetic", method="cot", model="m", rule=rule)
        assert table.schema == CURATED_SCHEMA


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown consistency rule"):
        _curate_one({**BASE, "samples": []}, task="last_letter", method="m", model="m", rule="vibes")


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
    generated = generate_for_curation(
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
    for row in generated.to_pylist():  # the input's own samples first, then each variant's, numbered within it
        assert [(s["variant"], s["sample"]) for s in row["samples"]] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
        assert row["variant_inverse"][0] == [] and len(row["variant_inverse"][1]) == 4
    (curated,) = curate_generated(
        generated.slice(0, 1), task="multiple_choice", method="system1", model="m", rule="perturbation"
    ).to_pylist()
    # The model always answers "A": mapped back, the variants name different options, so the input is rejected.
    assert curated["status"] == "rejected" and curated["reason"] == "variants_disagree"


def test_generate_for_bsm_passes_the_fields_to_the_templates():
    gen = Scripted("1. Accuracy")
    rows = _rows("pairwise_judge", 1)
    generated = generate_for_curation(
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
    own = [sample for sample in generated.to_pylist()[0]["samples"] if sample["variant"] == 0]
    assert own and all(sample["text"].endswith("Answer: none") for sample in own)


def test_generate_for_usc_makes_one_greedy_judge_call_per_input():
    gen = Scripted()
    rows = _rows("arithmetic", 2)
    generated = generate_for_curation(
        gen, get_method("cot"), get_task("arithmetic"), rows, SamplingRequest(n=3), rule="usc"
    )
    judge_prompts, judge_request = gen.calls[-1]
    assert len(judge_prompts) == 2 and judge_request.n == 1 and judge_request.temperature == 0.0
    assert "Response 3: Answer: A" in judge_prompts[0] and "Response 4" not in judge_prompts[0]
    assert generated["judge_choice"].to_pylist() == [1, 1] and generated["judge_tokens"].to_pylist() == [9, 9]


def test_generate_for_majority_gives_the_contract_without_criterion_extras():
    gen = Scripted()
    rows = _rows("last_letter", 2)
    generated = generate_for_curation(gen, get_method("rar1"), get_task("last_letter"), rows, SamplingRequest(n=2))
    assert generated.schema == GENERATED_SCHEMA
    assert generated["shard_id"].to_pylist() == [3, 3]
    assert [[s["tokens"] for s in row["samples"]] for row in generated.to_pylist()] == [[4, 4], [4, 4]]
    assert all(s["variant"] is None and s["steps"] is None for row in generated.to_pylist() for s in row["samples"])
    for name in ("input_error", "variant_inverse", "judge_choice", "judge_tokens"):
        assert generated[name].null_count == 2


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
        generated = generate_for_curation(
            Scripted(), get_method("rar1"), get_task("last_letter"), [], SamplingRequest(), rule=rule, **extra
        )
        assert generated.schema == GENERATED_SCHEMA and generated.num_rows == 0
        assert curate_generated(generated, task="last_letter", method="m", model="m", rule=rule).num_rows == 0


class Unanimous:
    """A criterion written the way a new one is: every sample must give the same parsed answer."""

    name = "unanimous"
    description = "every sample agrees"
    perturbs = False

    def check(self, task, perturbation):
        pass

    def generate(self, generator, method, task, items, prompts, request, options):
        from s2d.engine.core.criteria.base import GeneratedInput, sample_inputs

        return [GeneratedInput([chains]) for chains in sample_inputs(generator, method, task, items, prompts, request)]

    def decide(self, ballots, options):
        from s2d.engine.core.criteria import Decision
        from s2d.engine.core.criteria.base import decisions_table
        from s2d.engine.core.votes import ranked_counts

        decisions = []
        for answers in ballots.answers.to_pylist():
            counts = ranked_counts(answers)
            agreed = len(counts) == 1 and None not in answers
            answer = next(iter(counts), None) if agreed else None
            decisions.append(
                Decision(
                    self.name,
                    answer,
                    max(counts.values(), default=0),
                    len(answers),
                    counts,
                    None if agreed else "split",
                )
            )
        return decisions_table(decisions)


def test_a_registered_criterion_runs_end_to_end_with_no_other_change():
    from s2d.engine.core.criteria import CRITERIA, register
    from s2d.engine.core.spec import parse_spec

    register(Unanimous())
    try:
        assert parse_spec({"model": "m"}, ["curate.rule=unanimous"]).curate.rule == "unanimous"
        with pytest.raises(ValueError, match="only used by rule perturbation, not 'unanimous'"):
            check_compatibility("last_letter", "rar1", "unanimous", "rename_entities")
        generated = generate_for_curation(
            Scripted("Answer: abcd"),
            get_method("rar1"),
            get_task("last_letter"),
            _rows("last_letter", 2),
            SamplingRequest(n=3),
            rule="unanimous",
            keep_samples=True,
        )
        curated = curate_generated(generated, task="last_letter", method="rar1", model="m", rule="unanimous")
        assert curated.schema == CURATED_SCHEMA
        assert curated["criterion"].to_pylist() == ["unanimous"] * 2 and curated["answer"].to_pylist() == ["abcd"] * 2
        assert [len(samples) for samples in curated["samples"].to_pylist()] == [3, 3]
        with pytest.raises(ValueError, match="already registered"):
            register(Unanimous())
    finally:
        CRITERIA.pop("unanimous", None)
    with pytest.raises(ValueError, match="unknown consistency rule"):
        check_compatibility("last_letter", "rar1", "unanimous", None)
