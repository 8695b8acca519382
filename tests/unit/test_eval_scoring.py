from s2d.engine.core.methods import Extractor
from s2d.engine.core.program import Chain
from s2d.engine.core.scoring import (
    agreement_outcomes,
    input_keys,
    majority_outcomes,
    paired_comparisons,
    score_majority,
    score_single,
    single_outcomes,
)
from s2d.engine.core.stats import wilson_interval
from s2d.engine.core.tasks import TaskInput


def _chains(*texts):
    return [Chain({"final": text}, 5) for text in texts]


def test_system2_is_scored_with_the_methods_extractor():
    inputs = [TaskInput("a", "Flip?", "yes"), TaskInput("b", "Flip?", "no")]
    chains = [_chains("Final: yes\nDone."), _chains("Final: no\nDone.")]
    custom = Extractor(kind="regex", pattern=r"Final:\s*(yes|no)")
    assert score_single("s2", "system2", "coin_flip", inputs, chains, custom).correct == 2
    assert score_single("s2", "system2", "coin_flip", inputs, chains).correct < 2  # the default reads no marker
    majority = score_majority("s2", "coin_flip", inputs, [_chains("Final: yes", "Final: yes", "Final: no")] * 2, custom)
    assert majority.correct == 1 and majority.tokens_per_answer == 15


def _letters(*answers):
    return _chains(*(f"The last letter is {answer}." for answer in answers))


def test_outcomes_are_keyed_by_input_id_and_the_sampled_interval_takes_the_input_as_the_unit():
    inputs = [TaskInput(f"w{i}", "q", "e" if i < 20 else "a") for i in range(100)]
    # each input's 8 samples all agree: right on the first 20 inputs' "e", wrong elsewhere
    chains = [_letters(*["e"] * 8) for _ in inputs]
    outcomes = single_outcomes("last_letter_one", inputs, chains)
    assert list(outcomes) == [f"w{i}" for i in range(100)] and outcomes["w0"] == (8, 8) and outcomes["w50"] == (0, 8)
    score = score_single("s2", "system2", "last_letter_one", inputs, chains)
    naive = wilson_interval(160, 800)
    assert score.accuracy == 0.2 and score.samples == 800 and score.effective_samples < 101
    assert score.ci_low < naive[0] and score.ci_high > naive[1]  # wider: 800 answers from 100 inputs
    direct = score_single("s1", "system1", "last_letter_one", inputs, [_letters("e") for _ in inputs])
    assert (direct.ci_low, direct.ci_high) == wilson_interval(20, 100)  # one answer per input: Wilson
    assert input_keys([TaskInput("x", "q", "a")] * 3) == ["x", "x#2", "x#3"]


def test_distilled_is_paired_with_system1_and_the_majority_on_accuracy_and_with_system1_on_agreement():
    inputs = [TaskInput(str(i), "q", "e") for i in range(40)]
    reference = ["e" if i % 2 == 0 else None for i in range(40)]
    base = [_letters("e" if i < 4 else "a") for i in range(40)]
    distilled = [_letters("e" if i < 20 else "a") for i in range(40)]
    sampled = [_letters("e", "e", "a") if i < 10 else _letters("a", "a", "e") for i in range(40)]
    systems = []
    for name, kind, chains in (("S1", "system1", base), ("S2", "system2", sampled), ("D", "distilled", distilled)):
        correct = single_outcomes("last_letter_one", inputs, chains)
        agrees = agreement_outcomes("last_letter_one", chains, reference, keys=[item.input_id for item in inputs])
        systems.append((score_single(name, kind, "last_letter_one", inputs, chains), correct, agrees))
    majority = majority_outcomes("last_letter_one", inputs, sampled)
    systems.append((score_majority("S2 majority", "last_letter_one", inputs, sampled), majority, {}))
    found = {(c["measure"], c["versus"]): c for c in paired_comparisons(systems)}
    assert set(found) == {("accuracy", "S1"), ("accuracy", "S2 majority"), ("agreement", "S1")}
    versus_base = found["accuracy", "S1"]  # 16 inputs right only when distilled, none only in base
    assert (versus_base["first_only"], versus_base["second_only"], versus_base["inputs"]) == (16, 0, 40)
    assert versus_base["difference"] == 0.4 and versus_base["p_value"] == 2 / 2**16 and versus_base["low"] > 0
    assert found["accuracy", "S2 majority"]["first_only"] == 10
    agreement = found["agreement", "S1"]  # only the 20 inputs with a reference answer
    assert agreement["inputs"] == 20 and (agreement["first_only"], agreement["second_only"]) == (8, 0)
    assert paired_comparisons(systems[:2]) == []  # nothing distilled: nothing to pair
