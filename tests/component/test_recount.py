"""The recount shared by rebuild and replay, on the real Redis: what it admits, and that it never writes blindly.

The history is built by hand: requests inside a replayed window and after
it, and a bad record. Only the window's events are counted, every valid
event moves stream time (so the closer can close the window), a bad record
is handed to the dead-letter sink alone, and a namespace taken over by
another recount stops this one with a one-line error instead of mixing the
two.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from live_kit import START_MS
from redis.asyncio import Redis

from stream.config import load_settings
from stream.events import RequestEvent, to_record
from stream.formats import DeadLetter
from stream.live.ingest import Record
from stream.live.recount import RecountError, recount_ingester
from stream.live.store import Fence, Store
from stream.sla.slots import SLOT_MS
from stream.sla.verdict import SlotCounts

APP = "1400000001"
TP = "requests:0"


def request(offset: int, ts: int) -> Record:
    value = json.dumps(to_record(RequestEvent(f"r-{offset}", APP, "room", "user", ts))).encode()
    return Record("requests", 0, offset, value)


def test_recount_counts_only_what_it_admits_and_stops_when_taken_over(redis_url, redis_prefix) -> None:
    window_end = START_MS + SLOT_MS

    async def main() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            settings = replace(load_settings(), key_prefix=redis_prefix)
            store = Store(redis, redis_prefix)
            fence = Fence(1, "rebuilding")
            await store.begin_rebuild(fence.generation)
            letters: list[DeadLetter] = []

            async def sink(letter: DeadLetter) -> None:
                letters.append(letter)

            ingester = recount_ingester(
                settings, store, fence, [TP], sink, "replay", admit=lambda event: event.counted_ts < window_end
            )
            inside = [request(offset, START_MS + offset * 1000) for offset in range(4)]
            after = [request(offset, window_end + offset * 1000) for offset in range(4, 7)]
            bad = Record("requests", 0, 7, b'{"event_id": 7}')
            await ingester.apply("request", [*inside, *after, bad])

            assert (await store.slot_counts([(APP, START_MS)]))[0] == SlotCounts(4, 0)
            assert (await store.slot_counts([(APP, window_end)]))[0] == SlotCounts(0, 0), "not admitted: not counted"
            assert (ingester.stats.counted, ingester.stats.skipped, ingester.stats.dead_letters) == (4, 3, 1)
            assert [(letter.offset, letter.rejected.reason) for letter in letters] == [
                (7, "field 'event_id' must be a string, got int")
            ]
            state = (await store.partition_states([TP]))[TP]
            assert (state.offset, state.stream_ms) == (7, window_end + 6000), "skipped events still move stream time"

            await store.begin_rebuild(2)  # another recount takes the namespace over
            with pytest.raises(RecountError, match="took the namespace over"):
                await ingester.apply("request", [request(8, START_MS + 8000)])
            assert (await store.slot_counts([(APP, START_MS)]))[0] == SlotCounts(0, 0), "the other recount's state"
        finally:
            await redis.aclose()

    asyncio.run(main())
