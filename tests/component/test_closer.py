"""The closer on the real Redis: when a slot closes, revisions for late events, the compare-and-set, batched commits.

Stream time is moved by events (``kit.move_stream_time``) so the watermark
is known exactly; the verdict messages the closer publishes land in a list.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

from live_kit import START_MS, LiveKit

from stream.live.closer import CloserLimits, ClosingLeader
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
        slot = await kit.store.redis.hgetall(kit.store.keys_of(APP).slot(APP, SLOT))
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


async def slots_due(kit: LiveKit, apps: int, slot_count: int) -> None:
    """A request in each of ``slot_count`` slots of ``apps`` apps, and stream time past them all."""
    for n in range(slot_count):
        slot_ms = SLOT + n * SLOT_MS
        await kit.count("request", [kit.request(0, f"r-{a}-{n}", f"app-{a}", slot_ms) for a in range(apps)])
    await kit.move_stream_time(SLOT + slot_count * SLOT_MS)


class CountedScript:
    """Stands between the store and its commit script, counting the calls (each one Redis round trip)."""

    def __init__(self, script) -> None:
        self.script = script
        self.calls = 0

    async def __call__(self, *args, **kwargs):
        self.calls += 1
        return await self.script(*args, **kwargs)


def test_a_ticks_verdicts_are_committed_in_batches(live) -> None:
    """1,200 slots due at once (40 apps, 30 slots): one Redis script call per batch of slots, not one per slot."""
    apps, slot_count = 40, 30

    async def steps(kit: LiveKit) -> None:
        await slots_due(kit, apps, slot_count)
        commits = kit.store._commit = CountedScript(kit.store._commit)
        result = await kit.tick()
        assert result.closed == apps * slot_count
        by_shard = Counter(kit.store.shard_of(f"app-{a}").index for a in range(apps))
        assert commits.calls == sum(-(-n * slot_count // COMMIT_BATCH) for n in by_shard.values())  # 3 on one shard
        assert len({key for key, _ in kit.verdict_messages}) == result.closed

    live(steps, grace_ms=0)


def test_verdicts_are_published_while_later_batches_are_judged(live) -> None:
    """1,200 slots due at once: the first verdicts go to Kafka before the last batch is committed, not after every
    batch, and each message goes out once, in commit order per slot, with every outbox empty at the end."""
    apps, slot_count = 40, 30

    async def steps(kit: LiveKit) -> None:
        await slots_due(kit, apps, slot_count)
        events: list[str] = []
        commit, send = kit.store._commit, kit.closer._send

        async def committing(*args, **kwargs):
            result = await commit(*args, **kwargs)
            events.append("commit")
            return result

        async def sending(messages):
            events.append("send")
            await send(messages)

        kit.store._commit, kit.closer._send = committing, sending
        result = await kit.tick()
        assert result.closed == result.published == apps * slot_count
        assert events.index("send") < len(events) - 1 - events[::-1].index("commit")  # a send before the last commit
        assert len(kit.verdict_messages) == len({key for key, _ in kit.verdict_messages}) == result.closed
        assert [await kit.store.outbox(shard, 10) for shard in range(len(kit.store.shards))] == [[]] * len(
            kit.store.shards
        )

    live(steps, grace_ms=0)


def test_each_result_of_a_batch_belongs_to_its_slot(live) -> None:
    """One batch with a slot committed, one whose counts moved and one whose revision moved: each answered."""

    async def steps(kit: LiveKit) -> None:
        for n in range(3):
            await traffic(kit, SLOT + n * SLOT_MS, 10, 10)
        read = await kit.store.slot_counts([(APP, SLOT + n * SLOT_MS) for n in range(3)])
        await kit.count("request", [kit.request(1, "r-moved", APP, SLOT + SLOT_MS)])  # the second slot's counts move

        def commit(n: int, expected_revision: int = 0) -> VerdictCommit:
            return VerdictCommit(
                APP, SLOT + n * SLOT_MS, read[n], expected_revision, None, None, LedgerDue(2026, 11, APP), 0
            )

        revisions = await kit.store.commit_verdicts(kit.fence, [commit(0), commit(1), commit(2, expected_revision=4)])
        assert revisions == [0, None, None]
        assert sorted(await kit.store.open_slots()) == [(APP, SLOT + SLOT_MS), (APP, SLOT + 2 * SLOT_MS)]

    live(steps, grace_ms=0)


def test_a_slot_judged_again_without_change_makes_no_revision(live) -> None:
    """A duplicate arriving late changes nothing: the slot is marked judged, no message is published."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 10, 10)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        await kit.tick()
        published = len(kit.verdict_messages)
        await kit.store.mark_dirty([(APP, SLOT)])  # what an exemption elsewhere in the window does
        result = await kit.tick()
        assert (result.revised, result.closed, len(kit.verdict_messages)) == (0, 0, published)
        assert not await kit.store.dirty_slots(10)

    live(steps, grace_ms=0)


def test_the_leader_tick_under_a_held_lease_and_a_fenced_namespace(live) -> None:
    """Another closer holds the lease: this one waits. The namespace moved on: the guard notices, nothing raises."""

    async def steps(kit: LiveKit) -> None:
        leader = ClosingLeader(kit.closer, kit.store, kit.guard, kit.health)
        await traffic(kit, SLOT, 10, 10)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        other = kit.store.closer_lease(5.0)
        assert await other.acquire(blocking=False)
        assert await leader.tick() is None and not kit.verdict_messages, "the lease is taken: no tick"
        await other.release()
        old = kit.fence
        assert await kit.store.new_generation(old, old.generation + 1)
        assert await leader.tick() is None, "fenced: the tick gives up quietly"
        assert kit.guard.fence is None, "and the guard forgets the old fence"
        result = await leader.tick()  # the next tick reads the new generation
        assert result is not None and result.closed >= 1
        assert {m["generation"] for m in kit.verdicts()} == {old.generation + 1}

    live(steps, grace_ms=0)


def test_the_month_ledger_follows_the_verdicts(live) -> None:
    """After a tick, the app's month ledger in Redis counts the unavailable slot (sla-stream/month/2)."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 100, 50)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        result = await kit.tick()
        assert LedgerDue(2026, 11, APP) in result.months
        raw = await kit.store.redis.get(kit.store.keys_of(APP).month(APP, date(2026, 11, 1)))
        figures = json.loads(raw)
        assert (figures["schema"], figures["unavailable_slots"], figures["requests"]) == ("sla-stream/month/2", 1, 100)
        assert figures["error_budget"]["slots_used"] == 1

    live(steps, grace_ms=0)


def test_every_worker_sees_when_a_closer_is_mid_tick(live) -> None:
    """The lease is held only while a tick runs, so any worker can tell (its metrics refresh waits then)."""

    async def steps(kit: LiveKit) -> None:
        await traffic(kit, SLOT, 10, 10)
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        seen: list[bool] = []
        tick = kit.closer.tick

        async def watched(fence, ledgers=True):
            seen.append(await kit.store.closer_ticking())
            return await tick(fence, ledgers)

        kit.closer.tick = watched  # type: ignore[method-assign]
        assert not await kit.store.closer_ticking()
        result = await ClosingLeader(kit.closer, kit.store, kit.guard, kit.health).tick()
        assert result is not None and result.closed == 1
        assert seen == [True] and not await kit.store.closer_ticking()

    live(steps, grace_ms=0)


def test_a_leader_tick_closes_a_whole_slot_boundary_in_rounds(live) -> None:
    """More slots due than one round takes (a fleet's slot boundary): the leader's tick goes on round after round
    until none is left, instead of waiting for its next timer between rounds, and recomputes the month ledgers
    once at the end, not once a round."""
    apps = 30

    async def steps(kit: LiveKit) -> None:
        kit.closer._limits = CloserLimits(slots=8, dedup_hold_ms=kit.settings.dedup_hold_ms)
        for a in range(apps):
            await kit.count("request", [kit.request(0, f"r-{a}", f"app-{a}", SLOT + a)])
        await kit.move_stream_time(SLOT + 2 * SLOT_MS)
        rounds, ledgers = CountedScript(kit.closer.tick), CountedScript(kit.closer._refresh_months)
        kit.closer.tick, kit.closer._refresh_months = rounds, ledgers  # type: ignore[method-assign]
        result = await ClosingLeader(kit.closer, kit.store, kit.guard, kit.health).tick()
        assert result is not None and result.closed == apps
        assert rounds.calls > 1 and not result.more
        assert ledgers.calls == 1 and len(result.months) == apps, "each app's ledger once, after every round"
        assert await kit.store.slots_to_close(SLOT + SLOT_MS, 100) == []

    live(steps, grace_ms=0)
