"""The pieces of the per-batch timeout that need no engine: the backend's deadline (a call past it raises and its
coroutine is cancelled, which is how vLLM's requests are aborted), the ledger's counts, the spec's range.
(tests/integration/test_batch_timeout.py runs it on real Ray and vLLM.)"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from s2d.actors.failures import EngineFailures
from s2d.actors.vllm_backend import BatchTimedOut, VLLMGenerator
from s2d.engine.core.spec import SpecError, parse_spec


class _Engine:
    def get_tokenizer(self):
        return None


@pytest.fixture
def generator():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield VLLMGenerator(_Engine(), loop, thread, max_model_len=1024)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


def test_a_call_past_its_deadline_raises_and_its_requests_are_cancelled(generator):
    cancelled = threading.Event()

    async def request_that_never_ends():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()  # vLLM's generate() aborts its request here
            raise

    started = time.monotonic()
    with generator.deadline(0.3), pytest.raises(BatchTimedOut):
        generator.run(request_that_never_ends())
    assert time.monotonic() - started < 2 and cancelled.wait(timeout=2)


def test_calls_within_the_deadline_and_outside_it_run_as_before(generator):
    async def answer(value, delay=0.0):
        await asyncio.sleep(delay)
        return value

    with generator.deadline(5):
        assert generator.run(answer(1)) == 1
        assert generator.run(answer(2, delay=0.1)) == 2  # the deadline spans the block, not each call
    assert generator.run(answer(3, delay=0.5)) == 3  # the block's end clears it
    with generator.deadline(None):
        assert generator.run(answer(4)) == 4


def test_a_coroutines_own_timeout_error_is_not_taken_for_the_deadline(generator):
    async def fails():
        raise TimeoutError("the coroutine's own")

    with generator.deadline(5), pytest.raises(TimeoutError, match="the coroutine's own"):
        generator.run(fails())


def test_the_deadline_is_per_thread(generator):
    """A replica runs its two batches in two threads: one batch's deadline does not limit the other's calls."""
    results = []

    def other_batch():
        results.append(generator.run(asyncio.sleep(0.6, result="done")))

    with generator.deadline(0.2):
        thread = threading.Thread(target=other_batch)
        thread.start()
        with pytest.raises(BatchTimedOut):
            generator.run(asyncio.sleep(3600))
    thread.join()
    assert results == ["done"]


def test_the_ledger_counts_timeouts_per_batch_and_caps_restarts_per_replica():
    ledger = EngineFailures()
    assert [ledger.batch_timed_out("a"), ledger.batch_timed_out("b"), ledger.batch_timed_out("a")] == [1, 1, 2]
    assert [ledger.restart_for_timeout("r1", 2) for _ in range(3)] == [True, True, False]
    assert ledger.restart_for_timeout("r2", 2) and not ledger.restart_for_timeout("r3", 0)
    assert ledger.causes() == [], "timeouts are not engine failures: they do not count toward max_engine_failures"


def test_batch_timeout_s_is_range_checked_and_none_turns_it_off():
    assert parse_spec({"model": "m"}, []).generation.batch_timeout_s == 900
    assert parse_spec({"model": "m"}, ["generation.batch_timeout_s=null"]).generation.batch_timeout_s is None
    for bad in ("0", "-5", "100000"):
        with pytest.raises(SpecError) as caught:
            parse_spec({"model": "m"}, [f"generation.batch_timeout_s={bad}"])
        assert "generation.batch_timeout_s" in str(caught.value) and "\n" not in str(caught.value)
