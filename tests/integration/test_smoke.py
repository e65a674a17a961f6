"""Smoke tests: the real Kafka broker and Redis server work with our clients.

Kafka: a fresh 3-partition topic, records produced to chosen partitions and
consumed back by a consumer group, with kafka-python and with aiokafka (the
client Faust uses). Redis: hashes, a MULTI/EXEC pipeline, WATCH, Lua.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

PARTITIONS = 3
PER_PARTITION = 5
TIMEOUT_S = 30

Sent = dict[int, list[tuple[bytes, bytes]]]
Got = dict[int, list[tuple[int, bytes, bytes]]]  # partition -> (offset, key, value)


def records_to_send() -> Sent:
    """Distinct keys and values per partition, including non-ASCII bytes."""
    return {
        p: [(f"app-{p}".encode(), f"slot {p}.{i} é".encode() + bytes([i, 0xFF])) for i in range(PER_PARTITION)]
        for p in range(PARTITIONS)
    }


def total(records: Sent | Got) -> int:
    return sum(len(v) for v in records.values())


def assert_same_per_partition(got: Got, sent: Sent) -> None:
    """Everything came back, in order, at offsets 0..n-1 of its partition."""
    assert sorted(got) == sorted(sent), "records came back on other partitions"
    for p, records in sent.items():
        assert [off for off, _, _ in got[p]] == list(range(len(records))), p
        assert [(k, v) for _, k, v in got[p]] == records, p


def test_kafka_python_produce_consume(kafka_bootstrap, make_topic, consumer_group):
    topic = make_topic("smoke-kafka-python", partitions=PARTITIONS)
    sent = records_to_send()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for p, records in sent.items() for k, v in records]
        producer.flush(timeout=TIMEOUT_S)
        assert all(f.get(timeout=TIMEOUT_S).topic == topic for f in futures)
    finally:
        producer.close(timeout=TIMEOUT_S)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got: Got = defaultdict(list)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while total(got) < total(sent) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                got[tp.partition] += [(m.offset, m.key, m.value) for m in messages]
        consumer.commit()
        committed = {p: consumer.committed(TopicPartition(topic, p)) for p in sent}
    finally:
        consumer.close()

    assert_same_per_partition(got, sent)
    assert committed == {p: len(records) for p, records in sent.items()}


async def aiokafka_roundtrip(bootstrap: str, topic: str, group: str, sent: Sent) -> tuple[Got, dict]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=k, value=v, partition=p) for p, records in sent.items() for k, v in records
        ]
        metadata = await asyncio.wait_for(asyncio.gather(*sends), TIMEOUT_S)
        assert all(m.topic == topic for m in metadata)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: Got = defaultdict(list)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while total(got) < total(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                got[tp.partition] += [(m.offset, m.key, m.value) for m in messages]
        await consumer.commit()
        committed = {p: await consumer.committed(AioTopicPartition(topic, p)) for p in sent}
    finally:
        await consumer.stop()
    return got, committed


def test_aiokafka_produce_consume(kafka_bootstrap, make_topic, consumer_group):
    topic = make_topic("smoke-aiokafka", partitions=PARTITIONS)
    sent = records_to_send()

    got, committed = asyncio.run(aiokafka_roundtrip(kafka_bootstrap, topic, consumer_group, sent))

    assert_same_per_partition(got, sent)
    assert committed == {p: len(records) for p, records in sent.items()}


def test_redis_hash(redis_client, redis_prefix):
    key = redis_prefix + "slot:app-1"
    fields = {"app": "app-1", "total": "120", "failed": "3", "ratio": "0.975"}

    assert redis_client.hset(key, mapping=fields) == len(fields)
    assert redis_client.hgetall(key) == fields
    assert redis_client.hincrby(key, "failed", 2) == 5
    assert redis_client.hmget(key, ["app", "failed", "missing"]) == ["app-1", "5", None]


def test_redis_multi_exec_pipeline(redis_client, redis_prefix):
    counter, events = redis_prefix + "counter", redis_prefix + "events"

    with redis_client.pipeline(transaction=True) as pipe:
        pipe.incr(counter).incrby(counter, 10).rpush(events, "a", "b").expire(counter, 60)
        assert pipe.execute() == [1, 11, 2, True]
    assert redis_client.get(counter) == "11"
    assert redis_client.lrange(events, 0, -1) == ["a", "b"]

    # WATCH: a change by another connection between WATCH and EXEC aborts.
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.watch(counter)
        redis_client.incr(counter)  # another connection from the pool
        pipe.multi()
        pipe.set(counter, 0)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert redis_client.get(counter) == "12"


def test_redis_lua_script(redis_client, redis_prefix):
    key = redis_prefix + "lua-counter"
    script = """
        local v = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return v
    """

    assert redis_client.eval(script, 1, key, 5, 60) == 5
    assert redis_client.eval(script, 1, key, 3, 60) == 8
    incr = redis_client.register_script(script)  # EVALSHA, loaded on demand
    assert incr(keys=[key], args=[2, 60]) == 10
    assert 0 < redis_client.ttl(key) <= 60
