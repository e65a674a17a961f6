"""The store's atomic steps against the real Redis: the offset fence, the namespace marker, chunked id sets.

Each status :class:`stream.live.store.ApplyStatus` names is provoked directly, so
the ingester's reaction to it (tested through workers in
tests/integration/test_stream_faults.py) rests on a step known to say the truth.
"""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from stream.live.store import (
    AppCounters,
    ApplyStatus,
    Fence,
    Fenced,
    LayoutMismatch,
    LedgerDue,
    Meta,
    RolledBack,
    SlotBatch,
    Store,
    VerdictCommit,
)
from stream.sla.coverage import MinuteMap, MonthBits
from stream.sla.verdict import SlotCounts

TP = "requests:0"
SLOT = 1_795_700_000_000


def run(coro):
    return asyncio.run(coro)


async def with_store(redis_url: str, prefix: str, steps):
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        return await steps(Store(redis, prefix))
    finally:
        await redis.aclose()


def batch(ids: list[str]) -> list[SlotBatch]:
    return [SlotBatch("app", SLOT, "2026-11-26", ids)]


def mark_judged(counts: SlotCounts) -> VerdictCommit:
    """A commit that only marks the slot judged (its verdict unchanged)."""
    return VerdictCommit("app", SLOT, counts, 0, None, None, LedgerDue(2026, 11, "app"), SLOT)


def test_every_status_of_apply_batch(redis_url, redis_prefix):
    async def steps(store: Store) -> None:
        fence = Fence(100)
        lost = await store.apply_batch(fence, TP, -1, [0], batch(["a"]), "requests", SLOT, 0)
        assert lost.status is ApplyStatus.STATE_LOST, "a namespace without its marker must refuse"
        assert await store.initialise(100) and not await store.initialise(200)

        first = await store.apply_batch(fence, TP, -1, [0, 1, 2], batch(["a", "b", "c"]), "requests", SLOT, 0)
        assert (first.status, first.applied_offset, first.counted) == (ApplyStatus.APPLIED, 2, 3)
        again = await store.apply_batch(fence, TP, -1, [0, 1, 2], batch(["a", "b", "c"]), "requests", SLOT, 0)
        assert again.status is ApplyStatus.ALREADY_APPLIED  # a redelivery: every offset at or below Redis's
        overlap = await store.apply_batch(fence, TP, 1, [2, 3], batch(["c", "d"]), "requests", SLOT, 0)
        assert (overlap.status, overlap.applied_offset) == (ApplyStatus.OVERLAP, 2)
        behind = await store.apply_batch(fence, TP, 7, [8, 9], batch(["x", "y"]), "requests", SLOT, 0)
        assert (behind.status, behind.applied_offset) == (ApplyStatus.BEHIND, 2), "Redis lost writes: refuse the gap"
        other = await store.apply_batch(Fence(99), TP, 2, [3], batch(["d"]), "requests", SLOT, 0)
        assert other.status is ApplyStatus.FENCED
        assert await store.slot_counts([("app", SLOT)]) == [SlotCounts(3, 0)], "only the first batch counted"
        assert await store.new_generation(fence, 150) and not await store.new_generation(fence, 160)
        assert (await store.meta()).fence == Fence(150)
        moved = await store.apply_batch(fence, TP, 2, [3], batch(["d"]), "requests", SLOT, 0)
        assert moved.status is ApplyStatus.FENCED, "steps of the generation before Redis lost writes are refused"

    run(with_store(redis_url, redis_prefix, steps))


def test_a_batch_records_the_minutes_of_its_events_only_when_it_is_applied(redis_url, redis_prefix):
    """Coverage is part of the fenced step: a refused or redelivered batch marks no minute, and the map read
    back is every partition's OR-ed, the same bytes an offline count of the same minutes gives."""
    month_start, month_end = 1_793_462_400_000, 1_796_054_400_000  # November 2026 in Shanghai
    bits = MonthBits(ZoneInfo("Asia/Shanghai"))

    def minutes(*numbers: int) -> list[tuple[str, int]]:
        return bits.of(month_start // 60_000 + n for n in numbers)

    async def steps(store: Store) -> None:
        fence = Fence(100)
        assert await store.initialise(100)
        await store.apply_batch(fence, TP, -1, [0], batch(["a"]), "requests", SLOT, 0, minutes(0, 1))
        await store.apply_batch(fence, TP, -1, [0], batch(["a"]), "requests", SLOT, 0, minutes(5))  # redelivery
        await store.apply_batch(Fence(99), TP, 0, [1], batch(["b"]), "requests", SLOT, 0, minutes(6))  # fenced
        await store.apply_batch(fence, TP, 7, [8], batch(["c"]), "requests", SLOT, 0, minutes(7))  # behind
        await store.apply_batch(fence, "successes:1", -1, [0], batch(["s"]), "successes", SLOT, 0, minutes(1, 43_199))
        await store.apply_batch(fence, "successes:1", 0, [1], [], "successes", SLOT, 0, bits.of([month_end // 60_000]))
        covered = await store.coverage("2026-11", month_start, month_end)
        expected = MinuteMap(month_start, month_end)
        expected.add_minutes(month_start // 60_000 + n for n in (0, 1, 43_199))
        assert covered.to_bytes() == expected.to_bytes()
        december = await store.coverage("2026-12", month_end, month_end + 31 * 86_400_000)
        assert list(december.minutes()) == [month_end], "a minute of the next month is in that month's map"
        assert not list((await store.coverage("2026-10", month_start - 31 * 86_400_000, month_start)).minutes())

    run(with_store(redis_url, redis_prefix, steps))


def test_a_month_keeps_its_daily_totals_and_an_index_of_its_slots(redis_url, redis_prefix):
    """What a month ledger and a statement read instead of every slot key: the month's and each local day's
    totals in one hash, and the starts of the slots with traffic; a duplicate id adds to neither."""
    second = SLOT + 86_400_000

    async def steps(store: Store) -> None:
        fence = Fence(100)
        assert await store.initialise(100)
        day_one, day_two = (
            SlotBatch("app", SLOT, "2026-11-26", ["a", "b"]),
            SlotBatch("app", second, "2026-11-27", ["c"]),
        )
        await store.apply_batch(fence, TP, -1, [0, 1], [day_one, day_two], "requests", second, 0)
        await store.apply_batch(fence, TP, 1, [2], [SlotBatch("app", SLOT, "2026-11-26", ["a"])], "requests", second, 0)
        await store.apply_batch(
            fence, "successes:0", -1, [0], [SlotBatch("app", SLOT, "2026-11-26", ["s"])], "successes", SLOT, 0
        )
        days = await store.redis.hgetall(store.keys.days("app", "2026-11"))
        assert days == {"requests": "3", "successes": "1", "26:requests": "2", "26:successes": "1", "27:requests": "1"}
        assert await store.redis.smembers(store.keys.slots("app", "2026-11")) == {str(SLOT), str(second)}
        assert not await store.redis.exists(store.keys.days("app", "2026-12"), store.keys.slots("app", "2026-12"))

    run(with_store(redis_url, redis_prefix, steps))


def test_a_rebuild_fences_the_live_generation_out(redis_url, redis_prefix):
    async def steps(store: Store) -> None:
        await store.initialise(100)
        await store.apply_batch(Fence(100), TP, -1, [0], batch(["a"]), "requests", SLOT, 0)
        assert await store.begin_rebuild(200) >= 3  # offsets, slot, ids, ... all gone but the marker
        assert (await store.meta()).fence == Fence(200, "rebuilding")
        live = await store.apply_batch(Fence(100), TP, -1, [0], batch(["a"]), "requests", SLOT, 0)
        assert live.status is ApplyStatus.FENCED
        with pytest.raises(Fenced):
            await store.commit_verdicts(Fence(100), [mark_judged(SlotCounts(0, 0))])
        rebuilt = await store.apply_batch(Fence(200, "rebuilding"), TP, -1, [0], batch(["a"]), "requests", SLOT, 0)
        assert rebuilt.status is ApplyStatus.APPLIED
        assert await store.finish_rebuild(200) and not await store.finish_rebuild(300)
        assert (await store.meta()).fence == Fence(200, "live")

    run(with_store(redis_url, redis_prefix, steps))


def test_one_slot_receiving_100000_ids_in_one_step(redis_url, redis_prefix):
    """Past Lua's unpack limit (about 8,000 values): the script adds ids in chunks."""

    async def steps(store: Store) -> None:
        await store.initialise(1)
        ids = [f"r-{i}" for i in range(100_000)] + ["r-0", "r-99999"]  # two duplicates
        offsets = list(range(100))
        result = await store.apply_batch(Fence(1), TP, -1, offsets, batch(ids), "requests", SLOT, 0)
        assert (result.status, result.counted, result.duplicates) == (ApplyStatus.APPLIED, 100_000, 2)
        assert await store.slot_counts([("app", SLOT)]) == [SlotCounts(100_000, 0)]

    run(with_store(redis_url, redis_prefix, steps))


def test_a_namespace_rolled_back_below_the_steps_seen_refuses_both_steps(redis_url, redis_prefix):
    """Redis restored from an older state: fewer steps than this store saw made. Nothing is written over it."""

    async def steps(store: Store) -> None:
        await store.initialise(100)
        fence = Fence(100)
        for offset, event_id in enumerate("abc"):
            await store.apply_batch(fence, TP, offset - 1, [offset], batch([event_id]), "requests", SLOT, 0)
        await store.redis.hset(store.keys.meta, "seq", 1)  # what a restore of an older snapshot leaves
        rolled = await store.apply_batch(fence, TP, 2, [3], batch(["d"]), "requests", SLOT, 0)
        assert rolled.status is ApplyStatus.ROLLED_BACK
        with pytest.raises(RolledBack):
            await store.commit_verdicts(fence, [mark_judged(SlotCounts(3, 0))])
        assert await store.slot_counts([("app", SLOT)]) == [SlotCounts(3, 0)]
        assert await store.new_generation(fence, 101)
        moved_on = await store.apply_batch(Fence(101), TP, 2, [3], batch(["d"]), "requests", SLOT, 0)
        assert moved_on.status is ApplyStatus.APPLIED, "a new generation starts counting steps afresh"

    run(with_store(redis_url, redis_prefix, steps))


def test_app_counters_are_read_in_chunks_whole(redis_url, redis_prefix):
    """Past a chunk of apps (1,000 a script call) every app's six counters come back, zeros for those without."""

    async def steps(store: Store) -> None:
        apps = [f"app{i:04d}" for i in range(2_345)]
        pipe = store.redis.pipeline(transaction=False)
        for i, app_id in enumerate(apps[::7]):
            pipe.hset(store.keys.calls(app_id), mapping={"requests": i + 10, "successes": i})
            pipe.hset(store.keys.outcomes(app_id), mapping={"good": 1, "bad": 2, "exempt": 3, "failed_calls": i + 4})
        await pipe.execute()
        counters = await store.app_counters(apps)
        assert list(counters) == apps
        for i, app_id in enumerate(apps):
            n = i // 7
            expected = AppCounters(n + 10, n, 1, 2, 3, n + 4) if i % 7 == 0 else AppCounters(0, 0, 0, 0, 0, 0)
            assert counters[app_id] == expected, app_id

    run(with_store(redis_url, redis_prefix, steps))


def test_a_sharded_namespace_moves_as_one(redis_url, redis_prefix):
    """Markers in every shard: a move to a new generation cut short is completed by the next reader, a rebuild
    marks every shard before deleting anything, and a store with another number of shards is refused."""

    async def steps(one: Store) -> None:
        store = Store(one.redis, one.prefix, shards=3)
        assert await store.initialise(100)
        fence = Fence(100)
        slots = [SlotBatch(app, SLOT, "2026-11-26", ["a"]) for app in ("1400000001", "1400000002", "1400000006")]
        assert {store.shard_of(s.app_id).index for s in slots} == {0, 1, 2}
        assert (await store.apply_batch(fence, TP, -1, [0], slots, "requests", SLOT, 0)).status is ApplyStatus.APPLIED

        with pytest.raises(LayoutMismatch, match=r"in 3 shards, not the 1 the settings give"):
            await one.meta()

        await store.redis.hset(store.shards[1].keys.meta, "generation", 200)  # a move cut short after one shard
        meta = await store.meta()
        assert meta is not None and meta.generation == 200
        assert [await store.redis.hget(s.keys.meta, "generation") for s in store.shards] == ["200"] * 3
        stale = await store.apply_batch(fence, TP, 0, [1], slots, "requests", SLOT, 0)
        assert stale.status is ApplyStatus.FENCED

        # Two workers notice lost writes at once: the home shard lets one of them move every shard.
        moved = await asyncio.gather(*(store.new_generation(Fence(200), g) for g in (250, 260, 270)))
        assert moved.count(True) == 1
        winner = (250, 260, 270)[moved.index(True)]
        assert [await store.redis.hget(s.keys.meta, "generation") for s in store.shards] == [str(winner)] * 3

        deleted = await store.begin_rebuild(300)
        assert deleted > 0 and await store.apps() == set()
        assert (await store.meta()) == Meta(300, "rebuilding", 300)
        assert await store.finish_rebuild(300)
        assert (await store.meta()) == Meta(300, "live", 300)

        # Rebuilt in another number of shards: the old shards' keys go too.
        applied = await store.apply_batch(Fence(300), TP, -1, [0], slots, "requests", SLOT, 0)
        assert applied.status is ApplyStatus.APPLIED
        two = Store(one.redis, one.prefix, shards=2)
        await two.begin_rebuild(400)
        assert await two.finish_rebuild(400)
        assert (await two.meta()) == Meta(400, "live", 400)
        left = [key async for key in one.redis.scan_iter(match=one.prefix + "*")]
        assert all(key.startswith(tuple(s.prefix for s in two.shards)) or key.endswith("layout") for key in left)
        await two.remove_all()

    run(with_store(redis_url, redis_prefix, steps))


@pytest.mark.parametrize("layout", [None, "1", "3", "1:1"])
def test_a_namespace_laid_out_by_an_older_version_is_refused(redis_url, redis_prefix, layout):
    """A namespace written by version 1 of the key layout (daily totals a key a day; no ``layout`` key before
    sharding, then the number of shards alone) is refused in one line that says to rebuild it."""

    async def steps(store: Store) -> None:
        assert await store.initialise(100)
        if layout is None:
            await store.redis.delete(store.prefix + "layout")
        else:
            await store.redis.set(store.prefix + "layout", layout)
        with pytest.raises(LayoutMismatch, match=r"laid out as version 1 .* `sla-stream rebuild` it"):
            await store.meta()

    run(with_store(redis_url, redis_prefix, steps))
