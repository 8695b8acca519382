"""last_letter_one, the tasks' few-shot exemplars with cot_fewshot, and agreement with System 2 in eval."""

import re

import pytest

from s2d.engine.core.answers import extract_final_answer
from s2d.engine.core.criteria import check_compatibility, input_context
from s2d.engine.core.methods import get_method
from s2d.engine.core.program import Chain
from s2d.engine.core.scoring import score_agreement, score_single, system2_reference
from s2d.engine.core.tasks import TaskInput, get_task, task_variables
from s2d.engine.core.tasks.last_letter import _SINGLE_WORD_EXEMPLARS, _VOCABULARY
from s2d.engine.stages.report import render_report

FEW_SHOT_TASKS = ("last_letter", "last_letter_one", "coin_flip", "arithmetic")


def test_last_letter_one_is_seeded_distinct_and_labelled_with_the_last_letter():
    task = get_task("last_letter_one")
    items = task.generate(200, seed=0, split="train")
    assert items == task.generate(200, seed=0, split="train") and len({i.question for i in items}) == 200
    for item in items:
        word = re.fullmatch(r'What is the last letter of the word "(\w+)"\?', item.question).group(1)
        assert item.label == word[-1].lower() and word.lower() not in {w.lower() for w in _SINGLE_WORD_EXEMPLARS}


def test_last_letter_one_holds_out_hundreds_of_words_that_training_never_sees():
    task = get_task("last_letter_one")
    held_out = {item.question for item in task.generate(300, 0, "eval")}
    train = {item.question for seed in (0, 1) for item in task.generate(1200, seed, "train")}
    assert len(held_out) == 300 and not held_out & train
    assert len(_VOCABULARY) > 2300


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("e", "e"),
        ("E.", "e"),
        ('The last letter is "e".', "e"),
        ("The last letter of Dale is e.", "e"),
        ("'D'", "d"),
        ("Dale", None),
        ("abc", None),
        ("", None),
        (None, None),
        ("The last letter is: y", "y"),
        ("Ｅ", "e"),
    ],
)
def test_last_letter_one_normalize(raw, expected):
    assert get_task("last_letter_one").normalize(raw) == expected


@pytest.mark.parametrize("name", FEW_SHOT_TASKS)
def test_every_exemplar_reads_as_its_own_right_answer(name):
    """A worked example whose answer line is wrong or unparseable would teach the model the wrong thing."""
    task = get_task(name)
    for example in task.exemplars:
        answer = task.normalize(extract_final_answer(example.solution))
        assert answer is not None, example
        if name.startswith("last_letter"):
            words = re.search(r'"([^"]+)"', example.question).group(1).split()
            assert answer == "".join(word[-1] for word in words).lower()
        if name == "arithmetic":  # the last equation's result is the answer
            assert answer == re.findall(r"= (\d+)", example.solution)[-1]
        # an exemplar's question never comes up as an input: the model would be shown the answer
        assert example.question not in {item.question for item in task.generate(200, 0, "eval")}


def test_cot_fewshot_renders_the_tasks_exemplars_then_the_question():
    task = get_task("last_letter_one")
    item = task.generate(1, 0, "eval")[0]
    prompt = get_method("cot_fewshot").render(0, input_context(task, item))
    assert prompt.count("Q: ") == len(task.exemplars) + 1 and prompt.endswith(f"Q: {item.question}\nA:")
    assert "pebble is spelled p-e-b-b-l-e. The last letter is e.\nAnswer: e" in prompt
    for name in FEW_SHOT_TASKS:
        check_compatibility(name, "cot_fewshot", "majority", None)
        assert len(task_variables(get_task(name))["exemplars"]) >= 2


@pytest.mark.parametrize("name", ["sycophancy", "pairwise_judge", "multiple_choice", "freeform"])
def test_cot_fewshot_is_refused_for_a_task_without_exemplars(name):
    assert task_variables(get_task(name)) == {}
    with pytest.raises(ValueError, match="exemplars"):
        check_compatibility(name, "cot_fewshot", "majority", None)


# --- agreement with System 2 -----------------------------------------------------------------------------------


def _chains(*answers):
    return [Chain({"answer": "" if a is None else f"Answer: {a}"}, 3) for a in answers]


def test_system2_reference_is_the_jobs_vote_and_none_where_it_would_reject():
    chains = [
        _chains("e", "e", "a", "b"),
        _chains("a", "b", "c", "d"),
        _chains("x", "x", "y", "y"),
        _chains(None, None, None, "k"),
    ]
    # threshold 0.3: the top answer needs more than 30% of the 4 votes (2); ties and no-answers have none
    assert system2_reference("last_letter_one", chains, None, 0.3) == ["e", None, None, None]
    assert system2_reference("last_letter_one", chains, None, 0.0) == ["e", None, None, "k"]


def test_agreement_counts_only_inputs_with_a_reference_and_every_sample_of_a_sampled_system():
    items = [TaskInput(str(i), "q", label) for i, label in enumerate("eab")]
    reference = ["e", None, "b"]
    direct = [_chains("e"), _chains("a"), _chains("c")]
    score = score_agreement(
        score_single("S1", "system1", "last_letter_one", items, direct), "last_letter_one", direct, reference
    )
    assert (score.agreement, score.agreement_samples) == (0.5, 2)  # input 1 has no reference; 1 of 2 agree
    assert score.agreement_low < 0.5 < score.agreement_high
    sampled = [_chains("e", "e", "x"), _chains("a", "a", "a"), _chains("b", "q", "q")]
    score = score_agreement(
        score_single("S2", "system2", "last_letter_one", items, sampled), "last_letter_one", sampled, reference
    )
    assert (score.agreement, score.agreement_samples) == (0.5, 6)
    unchanged = score_agreement(score, "last_letter_one", sampled, [None, None, None])
    assert unchanged is score  # no reference at all: nothing to report


def test_report_shows_agreement_beside_accuracy_and_marks_the_reference():
    def system(name, kind, agreement):
        fields = (
            dict(
                agreement=agreement, agreement_low=agreement - 0.1, agreement_high=agreement + 0.1, agreement_samples=40
            )
            if agreement is not None
            else {}
        )
        return dict(
            system=name,
            kind=kind,
            accuracy=0.3,
            correct=12,
            total=40,
            samples=40,
            tokens_per_answer=2.0,
            ci_low=0.2,
            ci_high=0.4,
            latency_s=0.01,
            **fields,
        )

    metrics = {
        "task": "last_letter_one",
        "method": "cot_fewshot",
        "model": "m",
        "eval_inputs": 40,
        "run": "r",
        "samples_for_system2": 8,
        "agreement_reference": {"threshold": 0.3, "inputs": 25},
        "systems": [
            system("System 1", "system1", 0.25),
            system("System 2 (x, majority of 8)", "system2", None),
            system("Distilled System 1", "distilled", 0.6),
        ],
    }
    report = render_report(metrics)
    assert "agrees with System 2" in report and "reference answer on 25 of them" in report
    assert "| 25.0% [15.0%, 35.0%] |" in report and "| 60.0% [50.0%, 70.0%] |" in report
    assert "| reference |" in report
