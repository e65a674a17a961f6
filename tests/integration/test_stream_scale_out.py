"""Scale-out: two workers in one group share the partitions; one is killed mid-stream and the other takes over.

Two hours of traffic for three apps (no successes later than the grace
period, so no slot ever needs a second revision) are produced over some ten
seconds into 4-partition topics while two workers of one group consume them.
Once both hold input partitions, the first worker is killed with SIGKILL
half way through; the survivor takes its partitions over. At the end the
counts are exact and every slot was closed once: revision 1 in Redis, and on
the verdicts topic each key has revision 1 and nothing else (a repeated
message, if any, identical).
"""

from __future__ import annotations

import re
import time

from stream_harness import (
    FLUSH_APP,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    simulated_traffic,
)

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002", "1400000003")
CHUNKS = 30


def holds_input_partitions(log: str, topic: str) -> bool:
    """Whether the worker's last assignment (as Faust logs it) includes partitions of ``topic``."""
    assignments = log.split("Setting newly assigned partitions")
    return len(assignments) > 1 and re.search(rf"\| {re.escape(topic)} +\| \{{", assignments[-1]) is not None


def test_stream_scale_out(stream_deployment):
    start = hours_ago(28)
    plan, events = simulated_traffic(
        APPS,
        start,
        120,
        incidents=[(30, 50, 0.9, APPS[0])],
        peak_per_minute=150,
        seed=31,
        trough_share=1.0,
        duplicate_rate=0.01,
        late_success_rate=0.0,
    )
    records = batched_records(events, batch=10, single_every=3)
    d = stream_deployment(grace_seconds=30, idle_lag_seconds=idle_lag_before(start - 3_600_000))

    first, second = d.start_worker(), d.start_worker()
    for worker in (first, second):
        d.wait_for(
            f"{worker.name} to hold input partitions",
            lambda w=worker: holds_input_partitions(w.tail(400), d.topics.requests),
            60,
        )
    for i in range(CHUNKS):
        d.produce(records[i * len(records) // CHUNKS : (i + 1) * len(records) // CHUNKS])
        if i == CHUNKS // 2:
            first.kill()  # half the stream is still to come
        time.sleep(0.3)
    assert second.alive
    d.wait_settled(timeout_s=120, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert holds_input_partitions(second.tail(5000), d.topics.requests)

    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    verdicts = d.verdict_table()
    assert {v["revision"] for v in verdicts.values()} == {"1"}, "a slot was closed more than once"
    assert any(v["unavailable"] == "1" for v in verdicts.values())
    latest = assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    assert {m["revision"] for key, m in latest.items() if not key.startswith(FLUSH_APP)} == {1}
    messages = [r for r in d.read_topic("verdicts") if not (r.key or "").startswith(FLUSH_APP)]
    repeated = len(messages) - len(latest)
    assert repeated <= 5, f"{repeated} verdicts were published more than once"
