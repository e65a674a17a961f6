"""Event time on the real Redis: partition stream times, idle reports and the watermark the closer reads.

The wall clock is a :class:`live_kit.FakeClock`, so "quiet for two seconds"
and "a report gone stale" are exact steps, not sleeps.
"""

from __future__ import annotations

from live_kit import INPUT_TPS, START_MS, LiveKit

from stream.live.clock import ClockTiming, IdleTracker, PartitionProgress
from stream.sla.slots import SLOT_MS

APP = "1400000001"
SLOT = START_MS


async def watermark(kit: LiveKit) -> int | None:
    timing = ClockTiming.of(kit.settings)
    return timing.watermark(await kit.store.partition_states(INPUT_TPS), kit.clock.now_ms)


def test_the_watermark_is_the_slowest_partitions_stream_time(live) -> None:
    async def steps(kit: LiveKit) -> None:
        assert await watermark(kit) is None, "no partition has a time yet: nothing may close"
        await kit.move_stream_time(SLOT + 10 * SLOT_MS)
        await kit.count("request", [kit.request(0, "r-late-p0", APP, SLOT + 20 * SLOT_MS)])
        assert await watermark(kit) == SLOT + 10 * SLOT_MS, "partition 1 and the successes hold it back"
        await kit.count("request", [kit.request(1, "r-old", APP, SLOT)])
        assert await watermark(kit) == SLOT + 10 * SLOT_MS, "an older event never moves stream time back"

    live(steps)


def test_a_quiet_caught_up_partition_lets_the_wall_clock_move_the_watermark(live) -> None:
    """One app busy on partition 0; the others quiet. Their idle reports let its slots close, and only while
    the reports are fresh."""

    async def steps(kit: LiveKit) -> None:
        timing = ClockTiming.of(kit.settings)
        await kit.move_stream_time(SLOT)
        await kit.count("request", [kit.request(0, f"r-{i}", APP, SLOT + i * 1000) for i in range(100)])
        tracker = IdleTracker(timing)
        quiet = [tp for tp in INPUT_TPS if tp != "requests:0"]
        applied = await kit.store.applied_offsets(INPUT_TPS)
        assert all(applied[tp].least == 0 for tp in quiet)  # one flush record each
        caught_up = {tp: PartitionProgress(applied=0, delivered=0, position=1, stable_end=1) for tp in quiet}
        kit.clock.now_s = (SLOT + 2 * SLOT_MS + timing.idle_lag_ms) / 1000
        idle, busy = tracker.report(caught_up, kit.clock.now_ms)
        assert sorted(idle) == sorted(quiet) and busy == []
        await kit.store.mark_idle(idle, busy)
        assert await watermark(kit) == SLOT + 99_000, "the busy partition's own time now decides"
        await kit.count("request", [kit.request(0, "r-next", APP, SLOT + 2 * SLOT_MS)])
        assert await watermark(kit) == SLOT + 2 * SLOT_MS
        assert (await kit.tick()).closed == 2, "the app's slot and the flush slot at SLOT, closed by quiet partitions"
        kit.clock.now_s += (timing.idle_fresh_ms + 1) / 1000
        assert await watermark(kit) == SLOT, "stale idle reports (a gone worker) are not trusted"

    live(steps, grace_ms=0)


def test_a_partition_with_records_not_yet_applied_is_busy(live) -> None:
    """Caught up means everything delivered was applied and the consumer is at the stable end."""

    async def steps(kit: LiveKit) -> None:
        tracker = IdleTracker(ClockTiming.of(kit.settings))
        now = kit.clock.now_ms
        behind = PartitionProgress(applied=4, delivered=6, position=7, stable_end=7)
        fetching = PartitionProgress(applied=6, delivered=6, position=7, stable_end=9)
        marker_last = PartitionProgress(applied=6, delivered=6, position=8, stable_end=8)  # offset 7: a txn marker
        idle, busy = tracker.report({"a:0": behind, "a:1": fetching, "a:2": marker_last}, now)
        assert (list(idle), busy) == (["a:2"], ["a:0", "a:1"])

    live(steps)
