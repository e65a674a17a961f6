"""Event time decides: a backlog and a live stream of the same events give the same verdicts, closed no earlier.

The same records (a day-old stretch of traffic for three apps with an
incident, duplicates, arrays and single-event records, no successes later
than the grace period) go into three deployments:

- fast: all of it is a backlog when the worker starts;
- slow: produced in 20 parts while the worker runs, each consumed before the next;
- held: partition 3 of both input topics is held back: until it is produced
  no slot closes, and once its first half arrives exactly the slots whose end
  plus grace its stream time has passed close, no more.

Idle partitions are kept from moving stream time (a huge idle lag), so only
event time closes slots; flush events move every partition past the last
slot at the end. Throughout, a watcher checks that no verdict exists for a
slot whose end plus grace is after the watermark. All three end with the
same verdicts, each the first and only revision, equal to the truth.
"""

from __future__ import annotations

import time

from stream_harness import (
    FLUSH_APP,
    EarlyCloseWatch,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    simulated_traffic,
)

from stream.live.clock import is_due

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002", "1400000003")
HELD = 3  # the partition held back


def test_stream_event_time(stream_deployment):
    start = hours_ago(26)
    plan, events = simulated_traffic(
        APPS,
        start,
        100,
        incidents=[(40, 55, 0.9, APPS[1])],
        peak_per_minute=120,
        seed=11,
        duplicate_rate=0.01,
        late_success_rate=0.0,
    )
    records = batched_records(events, batch=10, single_every=4)
    options = {"grace_seconds": 30, "idle_lag_seconds": idle_lag_before(start - 3_600_000)}
    flush_at = plan.end_ms + 3_600_000

    fast = stream_deployment(**options)
    fast.produce(records)
    still_open = fast.flush_stream_time(flush_at)
    with EarlyCloseWatch(fast):
        fast.start_worker()
        fast.wait_settled(still_open=still_open)
    truth = Truth.of(events, fast.settings)
    assert_slots_match_truth(fast, truth, ignore_apps=[FLUSH_APP])
    verdicts = fast.verdict_table()
    assert {(v["revision"], v["late_requests"], v["late_successes"]) for v in verdicts.values()} == {("1", "0", "0")}
    assert any(v["unavailable"] == "1" for v in verdicts.values()), "the incident should flag slots"
    published = without_generation(assert_topic_matches_redis(fast, ignore_apps=[FLUSH_APP]))

    slow = stream_deployment(**options)
    slow.wait_ready(slow.start_worker())
    with EarlyCloseWatch(slow):
        for i in range(20):
            slow.produce(records[i * len(records) // 20 : (i + 1) * len(records) // 20])
            slow.wait_applied()
            if i == 9:  # half way: the closer has kept up with event time
                slow.wait_closed_to_watermark()
                assert slow.verdict_keys(), "slots should close while the stream is live"
        slow.wait_settled(still_open=slow.flush_stream_time(flush_at))
    assert slow.verdict_table() == verdicts
    assert without_generation(assert_topic_matches_redis(slow, ignore_apps=[FLUSH_APP])) == published

    held = stream_deployment(**options)
    lagging = [r for r in records if r.partition == HELD]
    held.produce([r for r in records if r.partition != HELD])
    with EarlyCloseWatch(held):
        held.start_worker()
        held.wait_applied()
        watch_until = time.monotonic() + 3  # three closer ticks: nothing may close meanwhile
        held.wait_for("three seconds of watching", lambda: time.monotonic() > watch_until, 10)
        assert held.verdict_keys() == set(), "no slot may close while a partition has not started"
        assert len(held.open_slots()) == len(truth.counts)

        half = lagging[: len(lagging) // 2]
        held.produce(half)
        held.wait_applied()
        watermark = held.watermark()
        assert watermark is not None and watermark == min(held.stream_times()[f"{t}:{HELD}"] for t in held.input_topics)
        held.wait_closed_to_watermark()
        due = {key for key in truth.counts if is_due(key[1], watermark, held.settings.grace_ms)}
        assert held.verdict_keys() == due
        assert 0 < len(due) < len(truth.counts)

        held.produce(lagging[len(half) :])
        held.wait_settled(still_open=held.flush_stream_time(flush_at))
    assert held.verdict_table() == verdicts
    assert without_generation(assert_topic_matches_redis(held, ignore_apps=[FLUSH_APP])) == published


def without_generation(latest: dict[str, dict]) -> dict[str, dict]:
    """The verdicts without their ``generation``: each deployment's live state has its own (its start time)."""
    return {key: {k: v for k, v in message.items() if k != "generation"} for key, message in latest.items()}
