"""Records as real producers write them: librdkafka (confluent-kafka), compressed, transactional, with headers.

Every other stream test produces with kafka-python, uncompressed, outside
transactions. Here librdkafka, the client behind most non-Java producers,
writes the events:

- in each codec (gzip, snappy, lz4, zstd), idempotent or not: every event
  counted, every slot closed with the verdict of the truth;
- in a transaction that is aborted, then one that commits: only the
  committed events count, and the partition, whose last offset is then a
  transaction marker no record is delivered for, still goes idle, so the
  slot closes within grace + idle lag;
- transactions (some aborted) and plain writes interleaved across
  partitions, with the worker killed in between: exact;
- records with headers and without a key count; a tombstone is a dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from confluent_kafka import Producer
from stream_harness import (
    FLUSH_APP,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    event_key,
    event_value,
    hours_ago,
    idle_lag_before,
    partition_for,
    recent_slot,
    simulated_traffic,
    slot_traffic,
)

from stream.events import Event

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002")


def librdkafka(d, **config: object) -> Producer:
    return Producer({"bootstrap.servers": d.bootstrap, "linger.ms": 5, **config})


def write(producer: Producer, d, events: Iterable[Event], **extra: object) -> dict[str, int]:
    """Each event alone in a record, keyed and partitioned by user, as the harness does.

    Returns the last offset written per input partition (``topic:partition``),
    once every record was acknowledged.
    """
    failures: list[str] = []
    last: dict[str, int] = {}

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))
        else:
            tp = f"{message.topic()}:{message.partition()}"
            last[tp] = max(last.get(tp, -1), message.offset())

    for event in events:
        key = event_key(event)
        producer.produce(
            d.topic_of(event.kind),
            value=event_value(event),
            key=key.encode(),
            partition=partition_for(key),
            on_delivery=delivered,
            **extra,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures, failures
    return last


def committed(d, last: dict[str, int]) -> None:
    """These records are committed (or were written outside a transaction): the worker must apply them."""
    for tp, offset in last.items():
        d.produced[tp] = max(d.produced.get(tp, -1), offset)


@pytest.mark.parametrize(("codec", "idempotent"), [("gzip", True), ("snappy", False), ("lz4", True), ("zstd", False)])
def test_each_codec_is_counted_exactly(stream_deployment, codec, idempotent):
    start = hours_ago(10)
    plan, events = simulated_traffic(APPS, start, 40, peak_per_minute=80, seed=41, trough_share=1.0)
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    committed(d, write(librdkafka(d, **{"compression.type": codec, "enable.idempotence": idempotent}), d, events))
    d.start_worker()
    d.wait_settled(timeout_s=120, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert_slots_match_truth(d, Truth.of(events, d.settings), ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])


def test_an_aborted_transaction_is_not_counted_and_the_quiet_partition_still_closes(stream_deployment):
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=10)
    slot = recent_slot(20, d.settings)
    requests, successes = slot_traffic(APPS[0], slot, 100, 100)
    aborted, _ = slot_traffic(APPS[0], slot, 100, 0, tag="aborted")
    producer = librdkafka(d, **{"transactional.id": f"tx-{d.name}", "compression.type": "gzip"})
    producer.init_transactions(30)
    producer.begin_transaction()
    write(producer, d, aborted)
    producer.abort_transaction(30)
    producer.begin_transaction()
    last = write(producer, d, requests + successes)
    producer.commit_transaction(30)
    committed(d, last)
    worker = d.start_worker()
    began = time.monotonic()
    d.wait_for("the slot's verdict", lambda: (APPS[0], slot) in d.verdict_keys(), 60)
    print(f"closed {time.monotonic() - began:.1f} s after the worker started")
    stored = d.slots()[(APPS[0], slot)]
    assert (stored.requests, stored.successes) == (100, 100), "aborted events were counted"
    assert stored.verdict is not None and stored.verdict["unavailable"] == "0"
    assert d.all_applied() and worker.alive


def test_transactions_and_plain_writes_interleaved_with_a_kill(stream_deployment):
    start = hours_ago(12)
    plan, events = simulated_traffic(APPS, start, 60, peak_per_minute=100, seed=43, trough_share=1.0)
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    transactional = librdkafka(d, **{"transactional.id": f"tx-{d.name}", "compression.type": "lz4"})
    transactional.init_transactions(30)
    plain = librdkafka(d, **{"compression.type": "zstd"})
    counted: list[Event] = []
    chunks = 12
    worker = d.start_worker()
    for i in range(chunks):
        chunk = events[i * len(events) // chunks : (i + 1) * len(events) // chunks]
        in_tx = [e for e in chunk if partition_for(event_key(e)) < 2]
        transactional.begin_transaction()
        last = write(transactional, d, in_tx)
        if i % 3 == 2:
            transactional.abort_transaction(30)  # these events must never count
        else:
            transactional.commit_transaction(30)
            committed(d, last)
            counted += in_tx
        outside = [e for e in chunk if partition_for(event_key(e)) >= 2]
        committed(d, write(plain, d, outside))
        counted += outside
        if i == chunks // 2:
            worker.kill()
            worker = d.start_worker()
        time.sleep(0.3)
    assert len(counted) < len(events), "the test must abort some transactions"
    d.wait_settled(timeout_s=120, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert_slots_match_truth(d, Truth.of(counted, d.settings), ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])


def test_headers_null_keys_and_tombstones(stream_deployment):
    d = stream_deployment(grace_seconds=5)
    slot = recent_slot(15, d.settings)
    requests, successes = slot_traffic(APPS[0], slot, 30, 30)
    producer = librdkafka(d, **{"compression.type": "snappy"})
    write(producer, d, requests[:15], headers=[("trace-id", b"abc"), ("source", b"sdk")])
    for event in requests[15:]:  # no key: the producer picks the partition
        producer.produce(d.topics.requests, value=event_value(event))
    producer.produce(d.topics.requests, value=None, key=b"gone", partition=1)  # a tombstone
    write(producer, d, successes, headers={"content-type": b"application/json"})
    assert producer.flush(30) == 0
    d.start_worker()
    d.wait_for("all 30 requests and successes", lambda: counts_of(d, slot) == (30, 30), 60, lambda: counts_of(d, slot))
    letters = d.read_topic("dead_letter")
    assert [letter.value["reason"] for letter in letters] == ["record has no value (a tombstone)"]
    assert letters[0].value["partition"] == 1


def counts_of(d, slot: int) -> tuple[int, int] | None:
    stored = d.slots().get((APPS[0], slot))
    return None if stored is None else (stored.requests, stored.successes)
