"""What a worker exports, read through the exposition format Prometheus scrapes, against Redis's own figures.

The live path runs on the real Redis (live_kit); the snapshot and the
collector are the worker's; the text is parsed with prometheus_client's
parser, as a scrape would see it.
"""

from __future__ import annotations

import json
from datetime import date

from live_kit import INPUT_TPS, START_MS, LiveKit
from prometheus_client.parser import text_string_to_metric_families

from stream.events import REASON_CATEGORIES
from stream.live.metrics import STALE_AFTER_S, SnapshotReader, WorkerMetrics
from stream.sla.slots import SLOT_MS

DOWN, CALM = "1400000001", "1400000002"


def scrape(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def slot(kit: LiveKit, app_id: str, slot_ms: int, requests: int, successes: int) -> None:
    ids = [f"r-{app_id}-{slot_ms}-{i}" for i in range(requests)]
    await kit.count("request", [kit.request(0, ids[i], app_id, slot_ms + i) for i in range(requests)])
    await kit.count(
        "success",
        [kit.success(0, f"s-{ids[i]}", ids[i], app_id, slot_ms + i, slot_ms + i) for i in range(successes)],
    )


def test_the_export_equals_the_ledger_and_the_counters(live) -> None:
    """Nine bad slots of DOWN (a breach: 8 allowed), and a bad record: every figure as Redis has it."""

    async def steps(kit: LiveKit) -> None:
        for n in range(12):
            await slot(kit, DOWN, START_MS + n * SLOT_MS, 100, 90 if n < 9 else 100)
            await slot(kit, CALM, START_MS + n * SLOT_MS, 50, 50)
        await kit.count("request", [kit.raw("request", 1, b"{not json")])
        await kit.move_stream_time(START_MS + 13 * SLOT_MS)
        await kit.tick()
        metrics = WorkerMetrics.create(kit.settings, kit.health, kit.ingester.by_topic, kit.clock)
        kit.clock.now_s = (START_MS + 13 * SLOT_MS) / 1000
        metrics.collector.snapshot = await SnapshotReader().read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        samples = scrape(metrics)

        def app(name: str, app_id: str = DOWN, **labels: str) -> float:
            return samples[(name, tuple(sorted({"app": app_id, **labels}.items())))]

        ledger = json.loads(await kit.store.redis.get(kit.store.keys_of(DOWN).month(DOWN, date(2026, 11, 1))))
        assert app("sla_month_availability_ratio") == ledger["availability"]
        assert app("sla_month_meets_target") == 0.0 and ledger["meets_sla"] is False
        budget = ledger["error_budget"]
        assert (
            (app("sla_month_budget_allowed_slots"), app("sla_month_budget_used_slots"))
            == (8, 9)
            == (
                budget["slots_allowed"],
                budget["slots_used"],
            )
        )
        assert app("sla_month_budget_remaining_slots") == 0  # never below zero: used > allowed says it
        assert app("sla_month_voucher_ratio") == 0.1
        assert app("sla_month_availability_ratio", CALM) == 1.0
        assert app("sla_slots_closed_total", outcome="bad") == 9
        assert app("sla_slots_closed_total", outcome="good") == 3
        assert app("sla_calls_total") == 1200 and app("sla_call_successes_total") == 90 * 9 + 300
        assert app("sla_calls_failed_total") == 90
        assert app("sla_month_start_timestamp_seconds") == 1_793_462_400  # 2026-11-01T00:00+08:00
        assert samples[("sla_dead_letters_total", (("reason", "json"), ("topic", "requests")))] == 1
        assert samples[("sla_worker_state", (("state", "counting"),))] == 1
        assert samples[("sla_watermark_timestamp_seconds", ())] == (START_MS + 13 * SLOT_MS) / 1000
        assert samples[("sla_info", tuple(sorted({
            "version": "0.1.0", "timezone": "Asia/Shanghai", "slot_success_min": "99/100",
            "availability_target": "999/1000", "group": kit.settings.group}.items())))] == 1  # fmt: skip
        labels = {key for (_, labelset) in samples for key, _ in labelset}
        assert labels <= {"app", "outcome", "topic", "reason", "partition", "state", "kind", "le"} | {
            "version",
            "timezone",
            "slot_success_min",
            "availability_target",
            "group",
        }, "labels stay bounded: never a room, user, slot or month"

    live(steps, grace_ms=0)


def test_a_scrape_does_not_touch_redis(live) -> None:
    """The collector reads the last snapshot only: with Redis's client closed, a scrape still answers."""

    async def steps(kit: LiveKit) -> None:
        await slot(kit, DOWN, START_MS, 10, 10)
        metrics = WorkerMetrics.create(kit.settings, kit.health, kit.ingester.by_topic, kit.clock)
        metrics.collector.snapshot = await SnapshotReader().read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        await kit.store.redis.connection_pool.disconnect()
        kit.store.redis.connection_pool.reset()
        kit.store.redis.connection_pool.connection_kwargs["port"] = 1  # nothing listens there
        assert scrape(metrics)[("sla_open_slot_requests", (("app", DOWN),))] == 10

    live(steps)


def test_a_stale_snapshot_stops_the_app_series_and_every_reason_starts_at_zero(live) -> None:
    """A worker cut off from Redis for over a minute leaves the app series to the others; dead-letter series
    exist from 0 for every reason, so Prometheus's increase() sees the first one."""

    async def steps(kit: LiveKit) -> None:
        await slot(kit, DOWN, START_MS, 10, 10)
        metrics = WorkerMetrics.create(kit.settings, kit.health, kit.ingester.by_topic, kit.clock)
        before = scrape(metrics)
        assert before[("sla_snapshot_timestamp_seconds", ())] == 0
        assert {labels for name, labels in before if name == "sla_dead_letters_total"} == {
            (("reason", reason), ("topic", topic))
            for reason in REASON_CATEGORIES
            for topic in ("requests", "successes")
        }
        assert all(value == 0 for (name, _), value in before.items() if name == "sla_dead_letters_total")
        metrics.collector.snapshot = await SnapshotReader().read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        assert ("sla_month_availability_ratio", (("app", DOWN),)) in scrape(metrics)
        assert scrape(metrics)[("sla_watermark_lag_seconds", ())] == float("inf"), "no partition has a time yet"
        kit.clock.now_s += STALE_AFTER_S + 1
        stale = scrape(metrics)
        assert not [name for name, _ in stale if name.startswith(("sla_month_", "sla_open_slot_", "sla_calls"))]
        assert stale[("sla_snapshot_timestamp_seconds", ())] == metrics.collector.snapshot.taken_ms / 1000

    live(steps)


def test_the_input_silent_minutes_follow_the_minutes_redis_recorded(live) -> None:
    """Twenty minutes of requests, an hour without any, then the flush's minute: the running month's silent minutes
    are every minute before the traffic and the hour after it, up to the watermark, not the flush's own minute."""

    async def steps(kit: LiveKit) -> None:
        month_start = 1_793_462_400_000  # November 2026 in Shanghai, START_MS's month
        await kit.count("request", [kit.request(0, f"r-{m}", CALM, START_MS + m * 60_000 + 59_999) for m in range(20)])
        await kit.move_stream_time(START_MS + 80 * 60_000)
        metrics = WorkerMetrics.create(kit.settings, kit.health, kit.ingester.by_topic, kit.clock)
        kit.clock.now_s = (START_MS + 81 * 60_000) / 1000
        metrics.collector.snapshot = await SnapshotReader().read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        samples = scrape(metrics)
        assert samples[("sla_input_silent_minutes", ())] == (START_MS - month_start) // 60_000 + 60
        assert samples[("sla_input_covered_until_timestamp_seconds", ())] == (START_MS + 20 * 60_000) / 1000

    live(steps)


def test_the_running_months_are_read_again_only_where_a_ledger_changed(live) -> None:
    """A quiet refresh reads no ledger; a slot of DOWN turned bad re-reads DOWN's alone, and its gauges follow; a
    ledger version gone back (Redis lost writes) re-reads them all. An app with nothing judged yet reads 100%."""

    async def steps(kit: LiveKit) -> None:
        for n in range(3):
            await slot(kit, DOWN, START_MS + n * SLOT_MS, 100, 100)
            await slot(kit, CALM, START_MS + n * SLOT_MS, 50, 50)
        await kit.move_stream_time(START_MS + 4 * SLOT_MS)
        await kit.tick()
        read: list[list[tuple[str, date]]] = []
        months = kit.store.months

        async def spied(wanted):  # noqa: ANN001, ANN202 - the store's own read, recorded
            read.append(sorted(wanted))
            return await months(wanted)

        kit.store.months = spied  # type: ignore[method-assign]
        metrics = WorkerMetrics.create(kit.settings, kit.health, kit.ingester.by_topic, kit.clock)
        reader = SnapshotReader()

        async def refresh() -> dict:
            metrics.collector.snapshot = await reader.read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
            return scrape(metrics)

        first = await refresh()
        november = date(2026, 11, 1)
        assert read[-1] == sorted([(DOWN, november), (CALM, november), ("flush", november)])
        assert first[("sla_month_budget_used_slots", (("app", DOWN),))] == 0
        reads = len(read)
        await refresh()
        assert len(read) == reads, "nothing changed: no ledger read"

        await slot(kit, DOWN, START_MS + 5 * SLOT_MS, 100, 50)  # a bad slot
        await kit.move_stream_time(START_MS + 7 * SLOT_MS)
        await kit.tick()
        after = await refresh()
        assert read[-1] == sorted([(DOWN, november), ("flush", november)]), "CALM's ledger is unchanged: not read"
        ledger = json.loads(await kit.store.redis.get(kit.store.keys_of(DOWN).month(DOWN, november)))
        assert after[("sla_month_budget_used_slots", (("app", DOWN),))] == ledger["error_budget"]["slots_used"] == 1
        assert after[("sla_month_availability_ratio", (("app", CALM),))] == 1.0

        # as if Redis came back without its last writes
        await kit.store.redis.delete(kit.store.keys_of(DOWN).ledgerversion)
        await refresh()
        assert read[-1] == sorted([(DOWN, november), (CALM, november), ("flush", november)])

    live(steps, grace_ms=0)


def test_only_the_leader_exports_the_app_series(live) -> None:
    """Prometheus holds the app series once for the fleet: a worker that is not the group's leader exports its own
    series and the snapshot's age, and none of the app series, until it becomes leader."""

    async def steps(kit: LiveKit) -> None:
        await slot(kit, CALM, START_MS, 10, 10)
        leader = [False]
        metrics = WorkerMetrics.create(
            kit.settings, kit.health, kit.ingester.by_topic, kit.clock, exports_apps=lambda: leader[0]
        )
        metrics.collector.snapshot = await SnapshotReader().read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        follower = scrape(metrics)
        assert not [name for name, labels in follower if ("app", CALM) in labels]
        assert not [name for name, _ in follower if name.startswith(("sla_watermark", "sla_input_"))]
        assert (
            follower[("sla_snapshot_timestamp_seconds", ())] > 0
            and ("sla_worker_state", (("state", "counting"),)) in follower
        )
        leader[0] = True
        assert ("sla_open_slot_requests", (("app", CALM),)) in scrape(metrics)

    live(steps)


def test_a_quiet_refresh_reads_nothing_an_app_and_a_busy_one_only_the_shards_that_moved(live) -> None:
    """Work follows change: a refresh after nothing happened reads no app, its counters or its open slot, and
    hands over the same figures; after a count in one app's shard, only that shard's apps are read again."""

    async def steps(kit: LiveKit) -> None:
        apps = [f"14000{n:05d}" for n in range(40)]
        for app_id in apps:
            await slot(kit, app_id, START_MS, 4, 4)
        await kit.move_stream_time(START_MS + 2 * SLOT_MS)
        await kit.tick()
        asked: list[list[str]] = []
        counters = kit.store.app_counters

        async def spied(app_ids):  # noqa: ANN001, ANN202 - the store's own read, recorded
            asked.append(sorted(app_ids))
            return await counters(app_ids)

        kit.store.app_counters = spied  # type: ignore[method-assign]
        reader = SnapshotReader()
        first = await reader.read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms)
        assert asked[-1] == sorted([*apps, "flush"])
        again = await reader.read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms + 5_000)
        assert len(asked) == 1 and again.apps is first.apps, "nothing changed: nothing read, the same figures"
        await slot(kit, apps[7], START_MS + 2 * SLOT_MS, 3, 3)  # one more open slot, in one shard
        moved = await reader.read(kit.store, kit.settings, INPUT_TPS, kit.clock.now_ms + 10_000)
        shard = kit.store.shard_of(apps[7]).index
        assert asked[-1] == sorted(a for a in [*apps, "flush"] if kit.store.shard_of(a).index == shard)
        assert moved.apps[apps[7]].open_slot is not None and moved.apps[apps[7]].open_slot.counts.requests == 3
        assert moved.apps[apps[3]] == first.apps[apps[3]]

    live(steps, grace_ms=0)
