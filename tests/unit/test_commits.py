"""s2d.engine.data.commits.with_ticks: the driver's loop over pipeline output wakes up to commit between batches."""

from __future__ import annotations

import threading
import time

import pytest

from s2d.engine.data.commits import with_ticks


def slow_items(delays: list[float], pulled: list[int] | None = None):
    for index, delay in enumerate(delays):
        time.sleep(delay)
        if pulled is not None:
            pulled.append(index)
        yield index


def test_items_come_through_in_order_with_ticks_while_one_is_slow():
    seen = list(with_ticks(slow_items([0.0, 0.6, 0.0]), interval=0.1))
    assert [item for item in seen if item is not None] == [0, 1, 2]
    assert seen[0] == 0 and seen[-1] == 2
    ticks = seen.index(1) - 1  # the Nones between item 0 and item 1
    assert ticks >= 2 and all(item is None for item in seen[1 : seen.index(1)])


def test_no_ticks_when_items_come_faster_than_the_interval():
    assert list(with_ticks(iter(range(100)), interval=5.0)) == list(range(100))


def test_an_error_of_the_pipeline_is_raised_in_the_consumer():
    def failing():
        yield "first"
        raise RuntimeError("replica died")

    consumed = with_ticks(failing(), interval=1.0)
    assert next(consumed) == "first"
    with pytest.raises(RuntimeError, match="replica died"):
        next(consumed)


def test_the_puller_reads_at_most_one_ahead_and_stops_when_the_consumer_does():
    pulled: list[int] = []
    consumed = with_ticks(slow_items([0.0] * 50, pulled), interval=1.0)
    assert next(consumed) == 0
    time.sleep(0.3)
    assert len(pulled) <= 3  # the one handed over, one waiting in the hand-off, one the puller holds
    consumed.close()
    time.sleep(0.5)
    assert len(pulled) <= 3
    assert not [thread for thread in threading.enumerate() if thread.name == "s2d-pipeline-output"]
