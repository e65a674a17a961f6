"""The closer on the real Redis: when a slot closes, revisions for late events, the compare-and-set, batched commits.

Stream time is moved by events (``kit.move_stream_time``) so the watermark
is known exactly; the verdict messages the closer publishes land in a list.
"""

from __future__ import annotations

import json
from datetime import date

import redis
from live_kit import START_MS, LiveKit

from stream.live.store import COMMIT_BATCH, LedgerDue, VerdictCommit
from stream.sla.slots import SLOT_MS

APP = "1400000001"
SLOT = START_MS


async def traffic(kit: LiveKit, slot_ms: int, requests: int, successes: int, app_id: str = APP) -> None:
    """``requests`` requests in the slot, the first ``successes`` of them successful."""
    await kit.count(
        "request", [kit.request(0, f"r-{app_id}-{slot_ms}-{i}", app_id, slot_ms + i) for i in range(requests)]
    )
    await kit.count(
        "success",
        [
            kit.success(0, f"s-{app_id}-{slot_ms}-{i}", f"r-{app_id}-{slot_ms}-{i}", app_id, slot_ms + i, slot_ms + i)
            for i in range(successes)
        ],
    )


def test_a_slot_closes_once_its_end_plus_grace_is_reached_by_every_partition(live) -> None:
    async def steps(kit: LiveKit) -> None:
        grace = kit.settings.grace_ms
        await traffic(kit, SLOT, 100, 98)
        await kit.move_stream_time(SLOT + SLOT_MS + grace - 1)
        assert (await kit.tick()).closed == 0, "one millisecond short of slot end + grace"
        await kit.move_stream_time(SLOT + SLOT_MS + grace)
        result = await kit.tick()
        assert result.closed == 1 and result.watermark_ms == SLOT + SLOT_MS + grace
        [message] = [m for m in kit.verdicts() if m["app_id"] == APP]
        assert (message["revision"], message["requests"], message["successes"]) == (1, 100, 98)
        assert message["unavailable"] is True and message["exempt"] is False
        assert (await kit.tick()).closed == 0, "a closed slot is not closed again"

    live(steps, grace_ms=30_000)


def test_a_late_event_makes_the_next_revision_with_the_new_counts(live) -> None:
    """A success arriving after its slot closed: counted as late, the slot judged again, revision 2."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 100, 98)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        await kit.tick()
        late = kit.success(1, "s-late", f"r-{APP}-{SLOT}-99", APP, SLOT + 2 * SLOT_MS, SLOT + 99)
        await kit.count("success", [late])
        result = await kit.tick()
        assert result.revised == 1
        latest = [m for m in kit.verdicts() if m["app_id"] == APP][-1]
        assert (latest["revision"], latest["successes"], latest["unavailable"]) == (2, 99, False), "99% is available"
        slot = await kit.store.redis.hgetall(kit.store.keys.slot(APP, SLOT))
        assert slot["late_successes"] == "1"

    live(steps, grace_ms=0)


def test_a_verdict_computed_from_counts_that_moved_is_refused_and_judged_again(live) -> None:
    """The compare-and-set: counts read, then an event lands, then the commit: refused, not stored stale."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 10, 10)
        read = (await kit.store.slot_counts([(APP, SLOT)]))[0]
        await kit.count("request", [kit.request(1, "r-extra", APP, SLOT + 50)])
        stale = VerdictCommit(APP, SLOT, read, 0, None, None, LedgerDue(2026, 11, APP), SLOT)
        assert await kit.store.commit_verdicts(kit.fence, [stale]) == [None]
        assert (APP, SLOT) in await kit.store.open_slots(), "still open: the next tick judges the new counts"
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        await kit.tick()
        [message] = [m for m in kit.verdicts() if m["app_id"] == APP]
        assert (message["requests"], message["successes"]) == (11, 10)

    live(steps, grace_ms=0)


def test_a_ticks_verdicts_are_committed_in_batches(live, redis_client: redis.Redis) -> None:
    """1,200 slots due at once (40 apps, 30 slots): one Redis script call per batch of slots, not one per slot."""
    apps, slot_count = 40, 30

    async def steps(kit: LiveKit) -> None:
        for n in range(slot_count):
            slot_ms = SLOT + n * SLOT_MS
            await kit.count("request", [kit.request(0, f"r-{a}-{n}", f"app-{a}", slot_ms) for a in range(apps)])
        await kit.count("request", [kit.request(0, "r-warm", "warm", SLOT - SLOT_MS)])
        await kit.move_stream_time(SLOT)
        assert (await kit.tick()).closed == 1  # the warm-up slot: the script is loaded from here on
        await kit.move_stream_time(SLOT + slot_count * SLOT_MS)
        before = _evalsha_calls(redis_client)
        result = await kit.tick()
        calls = _evalsha_calls(redis_client) - before
        assert result.closed == apps * slot_count + 1  # and the flush app's slot at SLOT
        assert calls == -(-result.closed // COMMIT_BATCH), f"{calls} script calls for {result.closed} slots"
        assert len({key for key, _ in kit.verdict_messages}) == result.closed + 1

    live(steps, grace_ms=0)


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_the_month_ledger_follows_the_verdicts(live) -> None:
    """After a tick, the app's month ledger in Redis counts the unavailable slot (sla-stream/month/1)."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 100, 50)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        result = await kit.tick()
        assert LedgerDue(2026, 11, APP) in result.months
        raw = await kit.store.redis.get(kit.store.keys.month(APP, date(2026, 11, 1)))
        figures = json.loads(raw)
        assert (figures["schema"], figures["unavailable_slots"], figures["requests"]) == ("sla-stream/month/1", 1, 100)
        assert figures["error_budget"]["slots_used"] == 1

    live(steps, grace_ms=0)
