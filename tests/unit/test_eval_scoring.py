from s2d.engine.core.methods import Extractor
from s2d.engine.core.program import Chain
from s2d.engine.core.tasks import TaskInput
from s2d.engine.stages.evaluate import score_majority, score_single


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
