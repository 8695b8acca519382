"""Stragglers re-issued (issue 26): which held batch a replica done with its own copies
(engine/core/stragglers.py), the job's coordinator that says when the tail begins and hands copies out and
results back (actors/straggler_coordinator.py, run here on a plain event loop, no Ray), and the abort that stops
a batch's engine calls when the other copy came first."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from s2d.actors.straggler_coordinator import COPIES_AT_ONCE, StragglerCoordinator
from s2d.actors.stragglers import AbortableBackend, AbortScope, BatchAborted, batch_key
from s2d.engine.core.program import Completion, SamplingRequest
from s2d.engine.core.stragglers import (
    ASK_AGAIN_UNKNOWN_S,
    MAX_ASK_AGAIN_S,
    MIN_ASK_AGAIN_S,
    HeldBatch,
    StragglerPolicy,
    ask_again_in,
    pick_straggler,
    pool_median,
)

POLICY = StragglerPolicy(factor=3.0, min_s=2.0)


def held(key: str, holder: str, age_s: float, helpers=(), reissued_age_s=None) -> HeldBatch:
    return HeldBatch(key, holder, age_s, frozenset(helpers), reissued_age_s)


def test_the_oldest_batch_past_factor_times_the_median_is_picked():
    batches = [held("young", "slow", 5.0), held("old", "slow", 12.0), held("older", "slow", 20.0)]
    assert pick_straggler(batches, median_s=2.0, helper="fast", policy=POLICY).key == "older"
    # Threshold max(3 x 2 s, 2 s) = 6 s: only batches at least that old qualify.
    assert pick_straggler([held("young", "slow", 5.9)], 2.0, "fast", POLICY) is None
    assert pick_straggler([held("young", "slow", 6.0)], 2.0, "fast", POLICY).key == "young"


def test_the_minimum_age_holds_whatever_the_median():
    # A median of 0.1 s would make 0.3 s a straggler; the floor (2 s) keeps short batches from being copied.
    assert pick_straggler([held("b", "slow", 1.5)], 0.1, "fast", POLICY) is None
    assert pick_straggler([held("b", "slow", 2.0)], 0.1, "fast", POLICY).key == "b"


def test_no_median_yet_means_no_reissue():
    assert pick_straggler([held("b", "slow", 1000.0)], None, "fast", POLICY) is None
    assert pool_median([]) is None
    assert pool_median([1.0, 9.0, 2.0]) == 2.0
    assert pool_median([1.0, 3.0]) == 2.0


def test_a_replica_never_copies_its_own_batch_nor_one_it_already_copies():
    assert pick_straggler([held("b", "fast", 100.0)], 1.0, "fast", POLICY) is None
    assert (
        pick_straggler([held("b", "slow", 100.0, helpers={"fast"}, reissued_age_s=50.0)], 1.0, "fast", POLICY) is None
    )


def test_a_copy_in_flight_is_left_alone_until_it_too_runs_past_the_threshold():
    # Copied 1 s ago by another replica: not yet (that copy may still win); copied 10 s ago: its helper is slow or
    # dead, another may try (the holder still owns the batch either way).
    assert pick_straggler([held("b", "slow", 30.0, {"other"}, 1.0)], 1.0, "fast", POLICY) is None
    assert pick_straggler([held("b", "slow", 30.0, {"other"}, 10.0)], 1.0, "fast", POLICY).key == "b"


def test_ask_again_when_the_first_batch_reaches_the_threshold_within_bounds():
    assert ask_again_in([held("b", "slow", 4.0)], 2.0, "fast", POLICY) == pytest.approx(2.0)  # 6 s - 4 s
    assert ask_again_in([held("b", "slow", 5.95)], 2.0, "fast", POLICY) == MIN_ASK_AGAIN_S
    assert ask_again_in([held("b", "slow", 0.0)], 60.0, "fast", POLICY) == MAX_ASK_AGAIN_S
    assert ask_again_in([], 2.0, "fast", POLICY) == ASK_AGAIN_UNKNOWN_S
    assert ask_again_in([held("b", "slow", 4.0)], None, "fast", POLICY) == ASK_AGAIN_UNKNOWN_S
    # A copied batch counts from its copy's start: copied 1 s ago, 5 s more.
    assert ask_again_in([held("b", "slow", 30.0, {"other"}, 1.0)], 2.0, "fast", POLICY) == MAX_ASK_AGAIN_S
    assert ask_again_in([held("b", "slow", 30.0, {"other"}, 3.0)], 2.0, "fast", POLICY) == pytest.approx(3.0)


def test_a_policy_out_of_range_is_refused():
    with pytest.raises(ValueError, match="factor"):
        StragglerPolicy(factor=1.0, min_s=0.0)
    with pytest.raises(ValueError, match="minimum"):
        StragglerPolicy(factor=2.0, min_s=-1.0)


def test_the_spec_re_issues_stragglers_by_default_null_turns_it_off_and_checks_the_fields():
    from pydantic import ValidationError

    from s2d.engine.core.spec import GenerationSpec

    spec = GenerationSpec()
    assert spec.straggler_factor == 3.0 and spec.straggler_min_s == 10.0  # issue 26: on, with two or more replicas
    assert GenerationSpec(straggler_factor=None).straggler_factor is None
    with pytest.raises(ValidationError):
        GenerationSpec(straggler_factor=1.0)
    with pytest.raises(ValidationError):
        GenerationSpec(straggler_min_s=-1)


def test_the_batch_key_is_its_input_ids_in_any_order():
    assert batch_key([{"input_id": "a"}, {"input_id": "b"}]) == batch_key([{"input_id": "b"}, {"input_id": "a"}])
    assert batch_key([{"input_id": "a"}]) != batch_key([{"input_id": "b"}])


async def _until(condition, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _coordinator_with_a_median(expected_rows: int | None = 3) -> StragglerCoordinator:
    """A coordinator whose pool has a 1 s median and whose slow replica runs batch "k" (1 row) since 10 s ago."""
    coordinator = StragglerCoordinator(factor=3.0, min_s=0.0, expected_rows=expected_rows)
    for number in range(2):
        await coordinator.started(f"quick{number}", "fast", 1)
        await coordinator.finished(f"quick{number}", 1.0, helper_won=False)
    await coordinator.started("k", "slow", 1)
    coordinator._running["k"] = ("slow", time.monotonic() - 10.0)
    return coordinator


async def _held(coordinator: StragglerCoordinator, rows=({"input_id": "x"},)) -> asyncio.Future:
    """Batch "k" of the slow replica registered with its rows (10 s old); the future of its `hold` call."""
    holding = asyncio.ensure_future(coordinator.hold("k", "slow", list(rows), age_s=10.0))
    await _until(lambda: "k" in coordinator._held)
    return holding


def test_no_tail_before_the_coordinator_knows_the_rows_to_expect():
    """Inputs partitioned beside the replicas' start: the coordinator starts without the count (None) and learns
    it with `expect`; until then no batch is copied."""

    async def scenario():
        coordinator = await _coordinator_with_a_median(expected_rows=None)
        await _held(coordinator)
        assert await coordinator.claim("fast") is None
        await coordinator.expect(3)  # the 3 rows started are all there are: the tail
        assert (await coordinator.claim("fast"))[0][0] == "k"

    asyncio.run(scenario())


def test_before_the_tail_a_finished_batch_returns_at_once():
    async def scenario():
        coordinator = await _coordinator_with_a_median(expected_rows=4)  # 3 of 4 rows started: not the tail
        await _held(coordinator)
        assert await coordinator.claim("fast") is None
        await coordinator.started("last", "fast", 1)  # every row started: the tail
        assert (await coordinator.claim("fast"))[0][0] == "k"

    asyncio.run(scenario())


def test_at_the_tail_a_batch_waits_for_a_straggler_to_register_and_stops_when_none_is_left():
    async def scenario():
        coordinator = await _coordinator_with_a_median()
        # "k" is past the threshold but has not sent its rows yet (it registers after straggler_min_s): ask again.
        assert isinstance(coordinator._claim_now("fast"), float)
        assert await coordinator.claim("slow") is None  # nothing of another replica's left to wait for
        # A waiting claim returns as soon as something changes (here the batch ends), not after its wait.
        waiting = asyncio.ensure_future(coordinator.claim("fast"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        await coordinator.finished("k", 11.0, helper_won=False)
        assert await asyncio.wait_for(waiting, 1.0) is None and time.monotonic() - started < 0.2
        assert await coordinator.claim("fast") is None
        # A retried batch (its replica restarted) is still running: its rows count once.
        assert coordinator._started_rows == 3

    asyncio.run(scenario())


def test_a_lingering_batch_takes_every_straggler_at_once_up_to_its_limit():
    async def scenario():
        coordinator = await _coordinator_with_a_median(expected_rows=3 + 5)
        for number in range(5):
            key = f"slow{number}"
            await coordinator.started(key, "slow", 1)
            coordinator._running[key] = ("slow", time.monotonic() - 10.0)
            asyncio.ensure_future(coordinator.hold(key, "slow", [{"input_id": key}], age_s=10.0))
        asyncio.ensure_future(coordinator.hold("k", "slow", [{"input_id": "x"}], age_s=10.0))
        await _until(lambda: len(coordinator._held) == 6)
        first = await coordinator.claim("fast")
        assert len(first) == COPIES_AT_ONCE and len({key for key, _ in first}) == COPIES_AT_ONCE
        second = await coordinator.claim("fast")
        assert len(second) == 6 - COPIES_AT_ONCE and not {key for key, _ in first} & {key for key, _ in second}

    asyncio.run(scenario())


def test_the_coordinator_hands_a_straggler_to_a_lingering_batch_and_its_copy_back_to_the_holder():
    async def scenario():
        coordinator = await _coordinator_with_a_median()
        rows = [{"input_id": "x", "prompt": "p"}]
        holding = await _held(coordinator, rows)
        assert await coordinator.claim("fast") == [("k", rows)]
        assert isinstance(coordinator._claim_now("other"), float)  # copied already, just now: wait
        assert not await coordinator.post("k", "other", "stranger's table", 1.0)  # not one of its helpers
        assert await coordinator.post("k", "fast", "fast's table", 1.0)
        assert not await coordinator.post("k", "fast", "again", 1.0)  # first result only
        assert await holding == "fast's table"
        released = asyncio.ensure_future(coordinator.released("k"))
        await asyncio.sleep(0)
        assert not released.done()
        await coordinator.finished("k", 10.5, helper_won=True)
        await asyncio.wait_for(released, 1.0)
        assert await coordinator.counts() == {"reissued": 1, "won": 1}
        assert await coordinator.claim("fast") is None  # the job is done

    asyncio.run(scenario())


def test_when_the_holder_finishes_first_its_copy_is_released_and_a_late_post_dropped():
    async def scenario():
        coordinator = await _coordinator_with_a_median()
        holding = await _held(coordinator)
        assert (await coordinator.claim("fast"))[0][0] == "k"
        released = asyncio.ensure_future(coordinator.released("k"))
        await coordinator.finished("k", 11.0, helper_won=False)
        assert await holding is None  # the holder kept its own
        await asyncio.wait_for(released, 1.0)  # the helper's signal to abort its copy
        assert not await coordinator.post("k", "fast", "late", 1.0)
        assert await coordinator.counts() == {"reissued": 1, "won": 0}

    asyncio.run(scenario())


def test_a_failed_copy_lets_another_replica_try_and_a_retried_batch_replaces_its_entry():
    async def scenario():
        coordinator = await _coordinator_with_a_median()
        first = await _held(coordinator)
        assert (await coordinator.claim("fast"))[0][0] == "k"
        await coordinator.abandon("k", "fast")
        assert (await coordinator.claim("other"))[0][0] == "k"
        # The holder died and Ray retried the batch on its restart: the new registration replaces the old one.
        await coordinator.started("k", "slow-restarted", 1)
        second = asyncio.ensure_future(coordinator.hold("k", "slow-restarted", [{"input_id": "x"}], age_s=10.0))
        assert await asyncio.wait_for(first, 1.0) is None
        await _until(lambda: coordinator._held["k"].holder == "slow-restarted")
        assert coordinator._started_rows == 3  # the retry's rows are not counted twice
        assert not await coordinator.post("k", "other", "for the dead holder", 1.0)
        await coordinator.finished("k", 1.0, helper_won=False)
        assert await second is None

    asyncio.run(scenario())


class LoopGenerator:
    """The shape of VLLMGenerator's `run` and `complete`: coroutines run on an event loop of its own thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.cancelled = 0

    async def complete(self, prompt, request, adapter=None):
        try:
            await asyncio.sleep(float(prompt))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [Completion(prompt, 1)] * request.n

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def test_aborting_a_scope_cancels_its_batch_engine_calls_and_no_one_elses():
    generator = LoopGenerator()
    backend = AbortableBackend(generator)
    request = SamplingRequest(n=2, temperature=0.7, top_p=1.0, max_tokens=4)
    scope, outcome = AbortScope(), {}

    def batch():
        with scope.entered():
            try:
                outcome["result"] = backend.generate(["30", "30"], request)
            except BaseException as error:  # noqa: BLE001 - what the batch's thread sees
                outcome["error"] = error

    thread = threading.Thread(target=batch)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    scope.abort()
    thread.join(5.0)
    assert not thread.is_alive() and time.monotonic() - started < 2.0
    assert "error" in outcome and generator.cancelled == 2  # both requests' tasks cancelled on the engine's loop
    with scope.entered(), pytest.raises(BatchAborted):  # and the batch sends nothing more
        backend.generate(["0"], request)
    # Outside any scope (and in another scope) calls run as before.
    assert backend.generate(["0"], request) == [[Completion("0", 1)] * 2]
    with AbortScope().entered():
        assert backend.generate(["0"], request) == [[Completion("0", 1)] * 2]
