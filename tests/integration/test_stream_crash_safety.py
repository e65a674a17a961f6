"""Crash safety: a worker killed with SIGKILL at random moments, and restarted, still counts exactly.

And a restart reads again no more than what was not yet counted: a worker
holds at most one fetched batch per partition, and reads from Redis's
positions.

Over 200,000 events (four apps, three hours of event time with duplicates and
late successes; JSON arrays of 50 events with single-event records among
them) are produced over some half a minute while one worker consumes them.
The worker is killed with SIGKILL at random instants while records are still
waiting to be counted, several times, and restarted each time (Kafka then
redelivers what was consumed since the last commit). At the end every slot's
counts are exact (nothing lost, nothing counted twice), every verdict is
right, and the verdicts topic agrees with Redis.
"""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.request

from kafka.admin import ConfigResource, ConfigResourceType
from stream_harness import (
    FLUSH_APP,
    Deployment,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    recent_slot,
    simulated_traffic,
    single_records,
    slot_traffic,
)

from stream.sla.slots import local_date

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002", "1400000003", "1400000004")
CHUNKS = 60
MIN_KILLS = 3


def test_stream_crash_safety(stream_deployment):
    start = hours_ago(30)
    plan, events = simulated_traffic(
        APPS,
        start,
        180,
        incidents=[(60, 80, 0.97, APPS[2])],
        peak_per_minute=300,
        seed=23,
        trough_share=1.0,  # the same rate all day, whatever the hour the test runs at
        duplicate_rate=0.005,
    )
    assert len(events) >= 200_000
    records = batched_records(events, batch=50, single_every=100)
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    seed = time.time_ns() % 2**32
    rng = random.Random(seed)
    print(f"{len(events):,} events in {len(records):,} records; random seed of the kills: {seed}")

    producing = threading.Event()
    producing.set()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(CHUNKS):
                d.produce(records[i * len(records) // CHUNKS : (i + 1) * len(records) // CHUNKS])
                time.sleep(0.5)
        except BaseException as error:  # reported by the main thread
            failure.append(error)
        finally:
            producing.clear()

    def applied_total() -> int:
        return sum(d.applied_offsets().values())

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    worker = d.start_worker()
    kills_while_pending = 0
    try:
        while kills_while_pending < MIN_KILLS:
            before = applied_total()
            d.wait_for(
                f"{worker.name} to count something",
                lambda b=before: applied_total() > b or not producing.is_set(),
                60,
            )
            time.sleep(rng.uniform(0.1, 2.0))  # a random instant while it consumes
            pending = producing.is_set() or not d.all_applied()
            worker.kill()
            kills_while_pending += pending
            print(f"killed {worker.name} at {time.strftime('%H:%M:%S')} ({'records pending' if pending else 'idle'})")
            assert pending or producing.is_set(), "the stream ended before the worker was killed often enough"
            worker = d.start_worker()
    finally:
        producer.join()
    assert not failure, failure

    settling = time.monotonic()
    d.wait_settled(timeout_s=180, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    print(f"settled {time.monotonic() - settling:.1f}s after the stream ended")
    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    counted = sum(s.requests + s.successes for key, s in d.slots().items() if key[0] != FLUSH_APP)
    assert counted == sum(c.requests + c.successes for c in truth.counts.values())


def test_a_restart_after_sigkill_reads_only_what_was_not_counted(stream_deployment):
    """SIGKILL mid-backlog: the next worker reads each partition from past Redis's applied offset, nothing else.

    Counted by the restarted worker's ``sla_records_read_total``: every record
    it fetched and handed to its counter. It must equal the records past the
    offsets Redis held when the first worker died, so no counted record is
    read again and none twice; what the dead worker had fetched but not
    counted (its in-flight batch, one per partition) is among them.
    """
    start = hours_ago(8)
    plan, events = simulated_traffic(APPS, start, 300, peak_per_minute=300, seed=5, trough_share=1.0)
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce(single_records(events))
    records = sum(offset + 1 for offset in d.produced.values())
    first = d.start_worker()

    def applied_records() -> int:
        return sum(offset + 1 for offset in d.applied_offsets().values())

    d.wait_for("a fifth of the backlog counted", lambda: applied_records() >= records // 5, 120, applied_records)
    first.kill()
    applied = settled_offsets(d)
    left = sum(end - applied.get(tp, -1) for tp, end in d.produced.items())
    print(f"{len(events):,} events in {records:,} records; killed with {left:,} records not yet counted")
    assert 0 < left < records, "the worker was killed before counting anything, or after counting everything"

    second = d.start_worker()
    d.wait_settled(timeout_s=180, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    flush_records = len(d.input_tps)  # flush_stream_time wrote one record to each input partition
    read = worker_counter(second, "sla_records_read_total")
    assert read == left + flush_records, f"read {read:,} records after the restart; {left + flush_records:,} were left"
    assert worker_counter(second, "sla_redelivered_batches_total") == 0


def settled_offsets(d: Deployment) -> dict[str, int]:
    """The applied offsets once two reads 0.5 s apart agree.

    Redis may still be executing a command the killed worker had written to
    its socket; reading at once could see offsets older than what counted.
    """
    before = d.applied_offsets()
    while True:
        time.sleep(0.5)
        after = d.applied_offsets()
        if after == before:
            return after
        before = after


def worker_counter(worker, name: str) -> int:
    """The sum of a counter's samples (all topics) in a running worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(sum(float(value) for value in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.MULTILINE)))


def test_stream_crash_between_verdict_and_ledger(stream_deployment):
    d = stream_deployment(grace_seconds=5)
    refuse_verdicts(d, max_message_bytes=20)
    slot = recent_slot(20, d.settings)
    requests, successes = slot_traffic(APPS[0], slot, 100, 90)
    d.produce(single_records(requests + successes))
    worker = d.start_worker()
    d.wait_for(
        "the verdict to be committed (and its publication to fail)",
        lambda: bool(d.verdict_keys()) and d.redis_client.llen(d.keys.outbox) > 0,
        60,
        workers_may_exit=True,
    )
    worker.kill()  # if the failed publication has not already stopped it
    refuse_verdicts(d, max_message_bytes=1_048_588)
    d.start_worker()
    d.wait_settled()
    assert [m["unavailable"] for m in d.latest_verdicts().values()] == [True]
    first_day = local_date(slot, d.settings.policy.timezone).replace(day=1).isoformat()
    ledger = d.month(APPS[0], first_day)
    assert ledger is not None and ledger["unavailable_slots"] == 1, f"month ledger {first_day}: {ledger}"


def refuse_verdicts(d, max_message_bytes: int) -> None:
    """Set the verdicts topic's ``max.message.bytes``: 20 makes the broker refuse every verdict."""
    resource = ConfigResource(
        ConfigResourceType.TOPIC, d.topics.verdicts, {"max.message.bytes": str(max_message_bytes)}
    )
    d.admin.alter_configs([resource])
