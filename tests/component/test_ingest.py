"""The ingester on the real Redis: the offset fence, duplicate ids, late events, bad records, Redis losing writes.

Each test builds a known history by hand and checks Redis's counts against
the number of distinct events in it.
"""

from __future__ import annotations

import pytest
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
        assert (await kit.store.applied_offsets(["requests:0"]))["requests:0"].least == 4

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
        assert (await kit.store.applied_offsets(["requests:0"]))["requests:0"].least == good_after.offset

    live(steps)


def test_redis_behind_the_reading_is_read_again_from_redis(live) -> None:
    """Redis lost its last writes (a restore): the partition is read again from Redis's offset, under a new
    generation, and the lost events are counted again, once."""

    async def steps(kit: LiveKit) -> None:
        first = [kit.request(0, f"r-{i}", APP, SLOT + i) for i in range(4)]
        await kit.count("request", first)
        generation = kit.fence.generation
        # What a restore leaves: the applied offset and counts of an earlier moment (2 of the 4 events).
        keys = kit.store.keys_of(APP)  # on a cluster: the shard of APP came back from a replica that lagged
        await kit.store.redis.hset(keys.offsets, "requests:0", 1)
        await kit.store.redis.hset(keys.slot(APP, SLOT), "requests", 2)
        await kit.store.redis.srem(keys.ids(APP, SLOT, "requests"), "r-2", "r-3")
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


class Killed(Exception):
    """The worker died here (not a Redis error: nothing retries it)."""


def test_a_batch_cut_short_between_its_shard_steps_is_completed_once(live) -> None:
    """A worker died after one shard applied a batch and before the others did: the next reading, from where
    every shard has the partition, completes the batch where it was missing and counts nothing twice."""
    apps = ["1400000001", "1400000002", "1400000003"]  # shards 3, 0 and 2 of five

    async def steps(kit: LiveKit) -> None:
        store = kit.store
        await kit.count("request", [kit.request(0, f"r-{app}-0", app, SLOT) for app in apps])  # offsets 0-2
        batch = [kit.request(0, f"r-{app}-{i}", app, SLOT + i) for i in (1, 2) for app in apps]  # offsets 3-8
        first_shard = store.shard_of(apps[0]).index
        apply_steps = store.apply_steps

        async def dies_after_one_shard(fence, tp, field, shard_steps):
            await apply_steps(fence, tp, field, {first_shard: shard_steps[first_shard]})
            raise Killed

        store.apply_steps = dies_after_one_shard  # type: ignore[method-assign]
        with pytest.raises(Killed):
            await kit.ingester.apply("request", batch)
        store.apply_steps = apply_steps  # type: ignore[method-assign]
        applied = (await store.applied_offsets(["requests:0"]))["requests:0"]
        assert applied.shards[first_shard] == 8
        assert applied.least == (8 if len(store.shards) == 1 else 2)

        # Another worker takes the partition over: it reads from the least applied offset + 1, in batches
        # that straddle the cut, and a redelivery of the whole.
        kit.cursors.forget(["requests:0"])
        await kit.ingester.position("requests:0")
        assert kit.seeks[-1] == ("requests:0", applied.least + 1)
        reread = [r for r in batch if r.offset > applied.least]
        await kit.ingester.apply("request", reread[:2])
        await kit.ingester.apply("request", reread[2:])
        await kit.ingester.apply("request", batch)
        for app in apps:
            assert await counts(kit, app_id=app) == SlotCounts(3, 0), app
        assert (await store.applied_offsets(["requests:0"]))["requests:0"].shards == tuple([8] * len(store.shards))

    live(steps)
