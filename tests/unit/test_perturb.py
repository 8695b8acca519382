"""Perturbations: each variant keeps the answer, and each inverse maps a variant's answer back exactly."""

import random

import pytest

from s2d.engine.core.perturb import PERTURBATIONS, Variant, get_perturbation, make_variants, register
from s2d.engine.core.tasks import get_task


def _true_answer(task_name, variant: Variant) -> str:
    """The answer of a variant recomputed from its own content, independently of the task's label."""
    task = get_task(task_name)
    if task_name == "multiple_choice":
        from s2d.engine.core.tasks.sycophancy import FACTS

        truth = {fact.question: fact.answer for fact in FACTS}[variant.fields["stem"]]
        return "ABCD"[variant.fields["options"].index(truth)]
    if task_name == "pairwise_judge":
        from s2d.engine.core.tasks.pairwise_judge import PAIRS

        good = {question: good for question, good, _ in PAIRS}[variant.fields["instruction"]]
        return "A" if variant.fields["response_a"] == good else "B"
    if task_name == "last_letter":
        words = variant.question.split('"')[1].split()
        return "".join(word[-1] for word in words).lower()
    raise AssertionError(task)


@pytest.mark.parametrize(
    "perturbation, task_name",
    [
        ("swap_responses", "pairwise_judge"),
        ("shuffle_options", "multiple_choice"),
        ("rename_entities", "last_letter"),
    ],
)
def test_inverse_maps_each_variants_true_answer_to_the_inputs_label(perturbation, task_name):
    task, perturber = get_task(task_name), get_perturbation(perturbation)
    for item in task.generate(10, 0, "train"):
        variants = make_variants(item, task, perturber, 4, seed=0)
        assert variants[0].question == item.question and variants[0].inverse == {}
        for variant in variants[1:]:
            assert variant.question != item.question  # a perturbation that changes nothing tests nothing
            if variant.fields:
                assert task.compose(variant.fields) == variant.question
            assert variant.invert(_true_answer(task_name, variant)) == item.label


def test_swap_responses_maps_a_and_b_and_keeps_tie():
    task = get_task("pairwise_judge")
    item = task.generate(1, 0, "train")[0]
    variant = get_perturbation("swap_responses").apply(item, task, random.Random(0))
    assert variant.fields["response_a"] == item.fields["response_b"]
    assert [variant.invert(a) for a in ("A", "B", "tie", None)] == ["B", "A", "tie", None]


def test_shuffle_options_inverse_is_a_permutation_of_letters():
    task = get_task("multiple_choice")
    item = task.generate(1, 0, "train")[0]
    for seed in range(20):
        variant = get_perturbation("shuffle_options").apply(item, task, random.Random(seed))
        assert sorted(variant.inverse) == sorted(variant.inverse.values()) == list("ABCD")
        assert any(key != value for key, value in variant.inverse.items())  # never the identity
        for letter, original in variant.inverse.items():
            assert variant.fields["options"]["ABCD".index(letter)] == item.fields["options"]["ABCD".index(original)]


def test_rename_entities_renames_consistently_in_coin_flip():
    task = get_task("coin_flip")
    question = "A coin is heads up. Ann flips the coin. Ann does not flip the coin. Is the coin still heads up?"
    from s2d.engine.core.tasks import TaskInput

    variant = get_perturbation("rename_entities").apply(TaskInput("id", question, "yes"), task, random.Random(1))
    new_name = variant.question.split(". ")[1].split()[0]
    assert new_name != "Ann" and new_name.endswith("n") and variant.question.count(new_name) == 2
    assert "A coin is heads up." in variant.question and variant.invert("yes") == "yes"


def test_variants_are_reproducible_per_input_and_seed():
    task = get_task("multiple_choice")
    item = task.generate(1, 0, "train")[0]
    perturber = get_perturbation("shuffle_options")
    assert make_variants(item, task, perturber, 3, 0) == make_variants(item, task, perturber, 3, 0)
    assert make_variants(item, task, perturber, 3, 0) != make_variants(item, task, perturber, 3, 5)


@pytest.mark.parametrize(
    "perturbation, task_name, message",
    [
        ("swap_responses", "last_letter", "needs a task with fields"),
        ("shuffle_options", "pairwise_judge", "needs a task with fields"),
        ("rename_entities", "arithmetic", "applies to tasks"),
    ],
)
def test_incompatible_tasks_are_refused(perturbation, task_name, message):
    with pytest.raises(ValueError, match=message):
        get_perturbation(perturbation).check_task(get_task(task_name))


def test_registry_is_pluggable_by_name():
    assert {"swap_responses", "shuffle_options", "rename_entities"} <= set(PERTURBATIONS)
    with pytest.raises(ValueError, match="unknown perturbation 'nope'"):
        get_perturbation("nope")
    with pytest.raises(ValueError, match="already registered"):
        register(get_perturbation("swap_responses"))

    class Upper:
        name, description = "upper_case_test", "upper-case the question"

        def check_task(self, task):
            pass

        def apply(self, item, task, rng):
            return Variant(item.question.upper())

    register(Upper())
    try:
        item = get_task("last_letter").generate(1, 0, "train")[0]
        variants = make_variants(item, get_task("last_letter"), get_perturbation("upper_case_test"), 2, 0)
        assert variants[1].question == item.question.upper()
    finally:
        del PERTURBATIONS["upper_case_test"]
