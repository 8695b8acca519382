"""The gate between a job's input partitioning and its pipeline, so that the replicas start while the inputs are
partitioned (engine/stages/generate.py: the partition runs beside the replicas' start when the pool leaves CPUs
for its tasks).

One small asyncio actor per job. The pipeline's load tasks wait in it before they read a shard's inputs; they wait
inside `ray.get`, which hands their CPU back to Ray meanwhile, so the partition's own tasks still get one. The
driver opens it once the partition is complete (its plan.json written), or with the partition's error, which every
waiting task then raises instead of reading a half-written shard.
"""

from __future__ import annotations

import asyncio


class InputsPartitioned(RuntimeError):
    """The job's inputs could not be partitioned; the load tasks waiting for them stop with this."""


class InputsGate:
    def __init__(self):
        self._opened = asyncio.Event()
        self._error: str | None = None
        self._shards: frozenset[int] = frozenset()

    async def wait(self) -> frozenset[int]:
        """Once the inputs are partitioned, the shards that have inputs to generate (a shard with none has no
        input file); raise InputsPartitioned if partitioning failed."""
        await self._opened.wait()
        if self._error is not None:
            raise InputsPartitioned(f"the job's inputs were not partitioned: {self._error}")
        return self._shards

    async def open(self, error: str | None = None, shards: list[int] | None = None) -> None:
        """The partition is complete (`error` None; `shards`: those with valid inputs) or failed (its text)."""
        self._error = error
        self._shards = frozenset(shards or ())
        self._opened.set()
