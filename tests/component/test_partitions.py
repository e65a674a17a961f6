"""Positioning the input partitions from Redis (stream/live/partitions.py), on the real Redis, with a plain consumer.

The consumer stands in for Faust's: it holds an assignment and records where
each partition was sought. A partition left without a position (its fetched
batch dropped across a rebalance) is positioned by the next idle report,
from Redis's applied offset, so its stream time cannot stand still.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from faust.types import TP
from redis.asyncio import Redis

from stream.config import load_settings
from stream.live.clock import ClockTiming, IdleTracker
from stream.live.cursors import Cursors
from stream.live.partitions import InputPartitions
from stream.live.store import Fence, Store

COUNTS = {"requests": 2, "successes": 2}


class PlainConsumer:
    """The consumer calls InputPartitions makes, answered from memory."""

    def __init__(self, assigned: set[TP], ends: Mapping[TP, int]) -> None:
        self.assigned = assigned
        self.ends = dict(ends)
        self.positions: dict[TP, int] = {}
        self.seeks: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.append(dict(partitions))
        self.positions.update(partitions)

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: 0 for tp in partitions}

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        return True


def test_an_unpositioned_partition_is_positioned_by_the_next_idle_report(redis_url, redis_prefix) -> None:
    async def run() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            store = Store(redis, redis_prefix)
            await store.initialise(1)
            fence = Fence(1)
            await store.apply_batch(fence, "requests:0", -1, (0, 41), [], "requests", 0, 0)  # applied up to 41
            assigned = {TP("requests", 0), TP("successes", 1)}
            consumer = PlainConsumer(assigned, {TP("requests", 0): 60, TP("successes", 1): 0})
            cursors = Cursors()
            timing = ClockTiming.of(load_settings(environ={}))
            partitions = InputPartitions(lambda: consumer, store, cursors, COUNTS, IdleTracker(timing))

            await partitions.position_assigned()
            assert consumer.seeks == [{TP("requests", 0): 42, TP("successes", 1): 0}]
            partitions.dropped([TP("requests", 0)])  # its fetched batch was not counted: the consumer moved past it
            assert cursors.get("requests:0") is None

            await partitions.report_idle()
            assert consumer.seeks[-1] == {TP("requests", 0): 42}  # only the one without a position, from Redis
            cursor = cursors.get("requests:0")
            assert cursor is not None and cursor.applied == 41
            await partitions.report_idle()
            assert len(consumer.seeks) == 2  # positioned once: nothing to do the next time
        finally:
            await redis.aclose()

    asyncio.run(run())
