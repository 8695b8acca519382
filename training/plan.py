"""The pure arithmetic of a training run: which examples go into which micro batch on which rank, the
learning-rate schedule, and the fingerprint that decides whether a checkpoint may be resumed.

The plan is global: every rank builds the same list of micro batches for an epoch and takes its own slice
of each optimizer step. An optimizer step always covers the same `accumulation x world_size` micro batches,
so the loss curve depends on the global batch only, not on how it is split between workers and gradient
accumulation (tests/integration/test_training_invariant.py checks 1 x 4 against 2 x 2).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from typing import Any, Literal

# Length grouping sorts within windows of this many micro batches: enough to cut padding, small enough
# that each step still sees a mix of the data (the approach of Hugging Face's LengthGroupedSampler).
LENGTH_GROUP_WINDOW = 50


Batching = Literal["length_grouped", "shuffled", "packed"]


def micro_batches(
    lengths: Sequence[int], micro_batch_size: int, batching: Batching, seed: int, max_seq_len: int | None = None
) -> list[list[list[int]]]:
    """One epoch's micro batches, seeded, identical on every rank.

    A micro batch is a list of sequences and a sequence a list of example indices: one example each, or, when
    packed, as many consecutive examples of the shuffled order as fit in `max_seq_len` tokens.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if batching == "packed":
        if max_seq_len is None:
            raise ValueError("packing needs max_seq_len")
        rows = packed_rows(lengths, order, max_seq_len)
        return [rows[start : start + micro_batch_size] for start in range(0, len(rows), micro_batch_size)]
    if batching == "length_grouped":
        window = micro_batch_size * LENGTH_GROUP_WINDOW
        order = [
            index
            for start in range(0, len(order), window)
            for index in sorted(order[start : start + window], key=lambda i: -lengths[i])
        ]
    batches = [
        [[index] for index in order[start : start + micro_batch_size]]
        for start in range(0, len(order), micro_batch_size)
    ]
    if batching == "length_grouped":
        rng.shuffle(batches)  # similar lengths inside a batch, not a long-to-short curriculum across batches
    return batches


def packed_rows(lengths: Sequence[int], order: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """Consecutive examples of `order` packed into sequences of at most `max_seq_len` tokens (no example is split)."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        if current and used + lengths[index] > max_seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(index)
        used += lengths[index]
    if current:
        rows.append(current)
    return rows


def padded_to_steps(batches: list[Any], micro_batches_per_step: int) -> list[Any]:
    """Wrap around to whole optimizer steps, so every rank runs the same number of steps and no collective waits."""
    steps = max(1, math.ceil(len(batches) / micro_batches_per_step))
    return [batches[i % len(batches)] for i in range(steps * micro_batches_per_step)]


def rank_micro_batches(plan: list[Any], step_in_epoch: int, rank: int, world_size: int, accumulation: int) -> list[Any]:
    """The `accumulation` micro batches this rank runs in one optimizer step (strided by rank)."""
    per_step = accumulation * world_size
    step = plan[step_in_epoch * per_step : (step_in_epoch + 1) * per_step]
    return step[rank::world_size]


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return int(total_steps * warmup_ratio)


def lr_factor(step: int, total_steps: int, warmup: int, schedule: Literal["cosine", "linear", "constant"]) -> float:
    """Multiplier of the peak rate for optimizer step `step` (0-based).

    Warmup rises linearly from 1/(warmup+1) and reaches the peak at step `warmup`; the decay then runs
    towards 0 at step `total_steps`, which is never taken, so no step has a zero rate.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def run_fingerprint(spec_train: dict[str, Any], model: str, rows: list[dict[str, str]]) -> str:
    """What a checkpoint belongs to: the training section, the model and the exact examples.

    Resuming across a change of any of them would mix two runs (DeepSpeed's sharded optimizer state also
    needs the same number of workers), so a changed fingerprint starts the run afresh.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"train": spec_train, "model": model}, sort_keys=True).encode())
    for row in rows:
        digest.update(json.dumps([row["prompt"], row["answer"]]).encode())
    return digest.hexdigest()[:16]
