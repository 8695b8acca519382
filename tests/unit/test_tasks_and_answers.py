import pytest

from s2d.engine.core.answers import extract_final_answer
from s2d.engine.core.tasks import LastLetterTask, get_task, make_input_id

TASK = LastLetterTask()


def test_last_letter_is_seeded_distinct_and_labelled():
    first = TASK.generate(50, seed=0, split="train")
    assert first == TASK.generate(50, seed=0, split="train")
    assert first != TASK.generate(50, seed=1, split="train")
    assert len({item.question for item in first}) == 50
    item = first[0]
    names = item.question.split('"')[1].split()
    assert len(names) == 4
    assert item.label == "".join(name[-1] for name in names).lower()
    assert item.question == f'Take the last letters of the words in "{" ".join(names)}" and concatenate them.'
    assert item.input_id == make_input_id("last_letter", item.question)


def test_eval_split_is_disjoint_from_train():
    train = {item.question for item in TASK.generate(200, 0, "train")}
    held_out = {item.question for item in TASK.generate(200, 0, "eval")}
    assert not train & held_out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let me think.\nAnswer: abcd", "abcd"),
        ("Answer: wrong\nwait...\nFinal answer: **yxwv**.", "yxwv"),
        ('The answer is "nmop".', '"nmop"'),
        ("just this line\n\n", "just this line"),
        ("", None),
        ("   \n ", None),
        (None, None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("abcd", "abcd"),
        ("A-B-C-D", "abcd"),
        ('The result is "eyne".', "eyne"),
        ("e y n e", "eyne"),
        ("1234", None),
        (None, None),
        ("a very long rambling sentence that is not an answer", None),
    ],
)
def test_last_letter_normalize(raw, expected):
    assert TASK.normalize(raw) == expected


def test_held_out_inputs_never_include_distilled_ones():
    from s2d.engine.core.spec import parse_spec
    from s2d.engine.stages.evaluate import held_out_inputs

    for task in ("last_letter", "coin_flip", "arithmetic"):
        spec = parse_spec({"model": "m", "task": {"name": task, "num_inputs": 300}, "eval": {"num_inputs": 40}})
        train = {item.input_id for item in get_task(task).generate(300, 0, "train")}
        held_out = held_out_inputs(spec)
        assert held_out and not train & {item.input_id for item in held_out}
