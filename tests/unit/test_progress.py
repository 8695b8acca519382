import json
from pathlib import Path

import pytest

from s2d.engine.stages.progress import JobProgress, ProgressDisplay, write_metrics


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _row(status, samples=4, tokens=10.0, reason=None):
    return {"status": status, "num_samples": samples, "system2_tokens": tokens, "reason": reason}


def test_totals_rates_and_eta():
    clock = Clock()
    progress = JobProgress(total_inputs=10, skipped_inputs=2, clock=clock)
    assert progress.snapshot()["tokens_per_s"] is None and progress.snapshot()["accept_rate"] is None
    clock.now += 4.0
    progress.add([_row("accepted"), _row("accepted"), _row("rejected", reason="tie"), _row("rejected", reason="tie")])
    snap = progress.snapshot()
    assert snap["inputs"] == 4 and snap["samples"] == 16 and snap["accepted"] == 2 and snap["rejected"] == 2
    assert snap["tokens"] == 160 and snap["tokens_per_s"] == 40.0
    assert snap["accept_rate"] == 0.5 and snap["rejected_by_reason"] == {"tie": 2}
    assert snap["inputs_per_s"] == 1.0 and snap["eta_s"] == 6.0  # 6 inputs left at 1 input/s
    assert snap["skipped_inputs"] == 2 and snap["total_inputs"] == 10


def test_quarantined_inputs_count_apart_from_the_curation_verdicts():
    progress = JobProgress(total_inputs=3, clock=Clock())
    progress.add([{"status": "quarantined", "reason": "too_long"}, _row("accepted"), _row("rejected", reason="tie")])
    snap = progress.snapshot()
    assert (snap["inputs"], snap["accepted"], snap["rejected"], snap["quarantined"]) == (3, 1, 1, 1)
    assert snap["accept_rate"] == 0.5 and snap["rejected_by_reason"] == {"tie": 1, "too_long": 1}
    assert progress.postfix()["quarantined"] == "1"


def test_nothing_left_means_eta_zero():
    progress = JobProgress(total_inputs=0, clock=Clock())
    assert progress.snapshot()["eta_s"] == 0.0


def test_negative_totals_are_refused():
    with pytest.raises(ValueError):
        JobProgress(total_inputs=-1)


def test_postfix_is_short_and_readable():
    clock = Clock()
    progress = JobProgress(total_inputs=4, clock=clock)
    clock.now += 2
    progress.add([_row("accepted", samples=8, tokens=25.0), _row("rejected", reason="no_answer")])
    assert progress.postfix() == {"accepted": "1", "rejected": "1", "accept": "50%", "tok/s": "120"}


def test_metrics_json_holds_the_snapshot_and_extras(tmp_path):
    clock = Clock()
    progress = JobProgress(total_inputs=2, clock=clock)
    clock.now += 1
    progress.add([_row("accepted"), _row("rejected", reason="below_threshold")])
    path = write_metrics(tmp_path, progress, {"committed_accepted": 1})
    content = json.loads(Path(path).read_text())
    assert content["stage"] == "generate" and content["inputs"] == 2 and content["committed_accepted"] == 1
    assert content["accept_rate"] == 0.5 and content["eta_s"] == 0.0
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.tmp"))


def test_display_follows_the_counts():
    progress = JobProgress(total_inputs=3, clock=Clock())
    display = ProgressDisplay(progress, enabled=False)
    progress.add([_row("accepted"), _row("accepted")])
    display.refresh()
    assert display.shown == 2
    display.close()
