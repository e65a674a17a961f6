"""The ingester on the real Redis: the offset fence, duplicate ids, late events, bad records, Redis losing writes.

Each test builds a known history by hand and checks Redis's counts against
the number of distinct events in it.
"""

from __future__ import annotations

from live_kit import START_MS, LiveKit

from stream.live.store import ApplyStatus
from stream.sla.verdict import SlotCounts

APP = "1400000001"
SLOT = START_MS


async def counts(kit: LiveKit, slot_ms: int = SLOT, app_id: str = APP) -> SlotCounts:
    return (await kit.store.slot_counts([(app_id, slot_ms)]))[0]


def test_a_redelivered_batch_counts_nothing_twice(live) -> None:
    """Kafka redelivers after a crash: the same offsets again, whole or in part, count once."""

    async def steps(kit: LiveKit) -> None:
        batch = [kit.request(0, f"r-{i}", APP, SLOT + i) for i in range(5)]
        await kit.count("request", batch)
        await kit.ingester.apply("request", batch)  # the whole batch again
        await kit.ingester.apply("request", batch[3:])  # its tail again
        assert await counts(kit) == SlotCounts(5, 0)
        assert kit.ingester.stats.redelivered == 2
        assert (await kit.store.app_counters([APP]))[APP].requests == 5, "the metrics' call counter: once too"
        assert (await kit.store.applied_offsets(["requests:0"]))["requests:0"] == 4

    live(steps)


def test_a_partition_is_counted_only_from_redis_position(live) -> None:
    """A partition not positioned since its assignment: its batch is dropped and the consumer sought to Redis's."""

    async def steps(kit: LiveKit) -> None:
        first = [kit.request(0, f"r-{i}", APP, SLOT + i) for i in range(3)]
        await kit.count("request", first)
        kit.cursors.forget(["requests:0"])  # a rebalance: Faust sought it to Kafka's committed offset
        ahead = [kit.request(0, f"r-{i}", APP, SLOT + i) for i in range(3, 6)]
        await kit.ingester.apply("request", ahead)
        assert await counts(kit) == SlotCounts(3, 0), "nothing counted before the partition was positioned"
        assert kit.seeks[-1] == ("requests:0", 3), "positioned at Redis's applied offset + 1"
        await kit.ingester.apply("request", ahead)  # what the consumer reads from there
        assert await counts(kit) == SlotCounts(6, 0)

    live(steps)


def test_duplicate_event_ids_in_a_slot_count_once(live) -> None:
    """A producer that sends an event twice (other offsets, other batches, other partitions): one count."""

    async def steps(kit: LiveKit) -> None:
        await kit.count("request", [kit.request(0, "r-1", APP, SLOT), kit.request(0, "r-1", APP, SLOT + 1)])
        await kit.count("request", [kit.request(1, "r-1", APP, SLOT + 2), kit.request(1, "r-2", APP, SLOT + 3)])
        await kit.count("success", [kit.success(0, "s-1", "r-1", APP, SLOT + 10, SLOT)])
        await kit.count("success", [kit.success(1, "s-1", "r-1", APP, SLOT + 11, SLOT)])
        assert await counts(kit) == SlotCounts(2, 1)
        assert kit.ingester.stats.duplicates == 3
        calls = (await kit.store.app_counters([APP]))[APP]
        assert (calls.requests, calls.successes) == (2, 1), "the metrics' call counters skip duplicates"

    live(steps)


def test_a_success_counts_in_its_requests_slot(live) -> None:
    """A success arriving in the next slot is counted where its request was (the request's time decides)."""

    async def steps(kit: LiveKit) -> None:
        request_ts = SLOT + 299_000  # the last second of the slot
        await kit.count("request", [kit.request(0, "r-1", APP, request_ts)])
        await kit.count("success", [kit.success(0, "s-1", "r-1", APP, request_ts + 5_000, request_ts)])
        assert await counts(kit) == SlotCounts(1, 1)
        assert await counts(kit, SLOT + 300_000) == SlotCounts(0, 0)

    live(steps)


def test_a_bad_record_is_dead_lettered_alone(live) -> None:
    """Bad bytes in the middle of a batch: one dead letter naming why and where; the others counted."""

    async def steps(kit: LiveKit) -> None:
        good_before = kit.request(0, "r-1", APP, SLOT)
        bad = kit.raw("request", 0, b'{"event_id": "r-2", "app_id": "' + APP.encode() + b'"}')
        utf16 = kit.raw("request", 0, '{"a": 1}'.encode("utf-16"))
        good_after = kit.request(0, "r-3", APP, SLOT + 1)
        await kit.count("request", [good_before, bad, utf16, good_after])
        assert await counts(kit) == SlotCounts(2, 0)
        assert [letter.offset for letter in kit.dead_letters] == [bad.offset, utf16.offset]
        assert "missing" in kit.dead_letters[0].rejected.reason
        assert "UTF-16" in kit.dead_letters[1].rejected.reason
        assert (await kit.store.applied_offsets(["requests:0"]))["requests:0"] == good_after.offset

    live(steps)


def test_redis_behind_the_reading_is_read_again_from_redis(live) -> None:
    """Redis lost its last writes (a restore): the partition is read again from Redis's offset, under a new
    generation, and the lost events are counted again, once."""

    async def steps(kit: LiveKit) -> None:
        first = [kit.request(0, f"r-{i}", APP, SLOT + i) for i in range(4)]
        await kit.count("request", first)
        generation = kit.fence.generation
        # What a restore leaves: the applied offset and counts of an earlier moment (2 of the 4 events).
        await kit.store.redis.hset(kit.store.keys.offsets, "requests:0", 1)
        await kit.store.redis.hset(kit.store.keys.slot(APP, SLOT), "requests", 2)
        await kit.store.redis.srem(kit.store.keys.ids(APP, SLOT, "requests"), "r-2", "r-3")
        more = [kit.request(0, "r-4", APP, SLOT + 4)]
        await kit.ingester.apply("request", more)
        assert kit.seeks[-1] == ("requests:0", 2), "read again from Redis's applied offset + 1"
        assert kit.fence.generation > generation, "a new generation: revisions published before are told apart"
        await kit.ingester.apply("request", [*first[2:], *more])  # what the consumer reads from there
        assert await counts(kit) == SlotCounts(5, 0)

    live(steps)


def test_apply_status_of_a_stale_generation_is_fenced(live) -> None:
    """The store refuses a step of a generation the namespace moved past: the ingester's fence is real."""

    async def steps(kit: LiveKit) -> None:
        old = kit.fence
        assert await kit.store.new_generation(old, old.generation + 1)
        record = kit.request(0, "r-1", APP, SLOT)
        result = await kit.store.apply_batch(old, "requests:0", -1, [record.offset], [], "requests", SLOT, 0)
        assert result.status is ApplyStatus.FENCED

    live(steps)
