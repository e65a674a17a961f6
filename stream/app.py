"""The Faust worker: agents that count the input topics, the closer, and the exemptions feed.

Faust brings the consumer group, rebalancing, timers and leader election;
the state and every exactness guarantee live in Redis (:mod:`stream.store`).
Following DESIGN.md, agents run with ``concurrency=1`` and take events in
batches, Faust's windowed tables are not used, and messages this worker
sends (dead letters, verdicts) are sent with ``force=True`` and awaited until
acknowledged, never attached to the consumed event: the Redis state moves on
at once, so a message must be out before it does.

Run one with ``sla-stream worker``; run more in the same group to scale out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from redis.asyncio import Redis
from redis.exceptions import LockError

from stream.closer import Closer, CloserTiming
from stream.config import Settings
from stream.events import InvalidEvent, Rejected, TimeBounds
from stream.exemption_feed import decode_exemption, exemption_from_json, judge_windows_again
from stream.ingest import DeadLetter, Ingester, Record
from stream.sla.counting import EventKind
from stream.store import Store

log = logging.getLogger(__name__)

TAKE_MAX = 10_000
"""Records per ``take_events`` batch: one Redis round trip per partition per batch."""
TAKE_WITHIN_S = 0.05


CLOSE_INTERVAL_S = 1.0
"""How often the leader closes due slots and publishes verdicts."""
STATS_INTERVAL_S = 30.0
"""How often a worker logs its ingest totals (when they changed)."""
CLOSER_LEASE_S = 15
"""The closer's Redis lease: long enough for a big tick, short enough that a killed leader's lease lapses soon."""
IDLE_AFTER_S = 2.0
"""A caught-up input partition with no new records for this long is reported idle."""


def _tp_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def create_app(settings: Settings, input_partitions: dict[str, int]) -> faust.App:
    """A Faust app wired to ``settings``; ``input_partitions`` maps each input topic to its partition count."""
    app = faust.App(
        settings.group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=False,
        stream_buffer_maxsize=TAKE_MAX,
    )
    topics = settings.topics
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    store = Store(redis, settings.key_prefix)
    tz = settings.policy.timezone
    dead_letters = app.topic(topics.dead_letter, value_serializer="raw", key_serializer="raw")
    verdicts = app.topic(topics.verdicts, value_serializer="raw", key_serializer="raw")

    async def send_dead_letter(letter: DeadLetter) -> None:
        delivery = await dead_letters.send(key=letter.key.encode(), value=letter.to_json().encode(), force=True)
        await delivery

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        deliveries = [
            await verdicts.send(key=key.encode(), value=value.encode(), force=True) for key, value in messages
        ]
        await asyncio.gather(*deliveries)

    def bounds() -> TimeBounds:
        return TimeBounds(settings.earliest_event_ms, int(time.time() * 1000) + settings.max_future_ms)

    ingester = Ingester(store, tz, bounds, send_dead_letter)
    input_tps = [_tp_name(topic, p) for topic, count in input_partitions.items() for p in range(count)]
    closer = Closer(
        store,
        settings,
        input_tps,
        send_verdicts,
        CloserTiming(
            grace_ms=settings.grace_ms, idle_lag_ms=settings.idle_lag_ms, dedup_hold_ms=settings.dedup_hold_ms
        ),
    )

    def ingest_agent(kind: EventKind) -> Any:
        async def ingest(stream: faust.StreamT) -> None:
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
                await ingester.apply(
                    kind,
                    [Record(e.message.topic, e.message.partition, e.message.offset, e.message.value) for e in events],
                )

        return ingest

    app.agent(app.topic(topics.requests), name="ingest_requests", concurrency=1)(ingest_agent("request"))
    app.agent(app.topic(topics.successes), name="ingest_successes", concurrency=1)(ingest_agent("success"))

    @app.agent(app.topic(topics.exemptions), name="follow_exemptions", concurrency=1)
    async def follow_exemptions(stream: faust.StreamT) -> None:
        """Record exemptions (a null value withdraws one) and have the slots they touch judged again."""
        async for event in stream.events():
            message = event.message
            exemption_id = (message.key or b"").decode("utf-8", errors="replace")
            previous = (await store.exemptions()).get(exemption_id)
            touched = [exemption_from_json(previous)] if previous else []
            if message.value is None:
                await store.put_exemption(exemption_id, None)
            else:
                try:
                    record = decode_exemption(message.value)
                except InvalidEvent as error:
                    origin = Record(message.topic, message.partition, message.offset, message.value)
                    payload = message.value.decode("utf-8", errors="replace")
                    await send_dead_letter(DeadLetter(origin, Rejected(str(error), payload)))
                    continue
                await store.put_exemption(exemption_id, record)
                touched.append(exemption_from_json(record))
            await judge_windows_again(store, touched)

    @app.task
    async def judge_config_exemptions_again() -> None:
        """Exemptions in the config file may have been added since slots closed: judge their slots again."""
        await judge_windows_again(store, settings.exemptions)

    @app.timer(interval=CLOSE_INTERVAL_S, on_leader=True)
    async def close_slots() -> None:
        """Close due slots from one place: the leader, holding a Redis lease against a rebalance overlap."""
        lease = redis.lock(store.key("lock", "closer"), timeout=CLOSER_LEASE_S)
        if not await lease.acquire(blocking=False):
            return
        try:
            result = await closer.tick()
        except Exception:  # noqa: BLE001 - the state is safe in Redis (outbox, due ledgers); retry next tick
            log.exception("closer tick failed; retrying in %.0f s", CLOSE_INTERVAL_S)
        else:
            if result.closed or result.revised:
                log.info(
                    "closed %d slots, revised %d, published %d (watermark %s)",
                    result.closed,
                    result.revised,
                    result.published,
                    result.watermark_ms,
                )
        finally:
            try:
                await lease.release()
            except LockError:
                log.warning("closer lease expired during a tick")

    logged: list[str] = [""]

    @app.timer(interval=STATS_INTERVAL_S)
    async def log_ingest_totals() -> None:
        """What this worker has counted since it started, when that changed."""
        line = str(ingester.stats)
        if line != logged[0]:
            log.info("ingest: %s", line)
            logged[0] = line

    progress: dict[str, tuple[int | None, float]] = {}

    @app.timer(interval=1.0)
    async def report_idle_partitions() -> None:
        """Tell the closer which of this worker's input partitions are caught up and quiet."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in input_partitions]
        if not assigned:
            return
        highwaters = await app.consumer.highwaters(*assigned)
        names = {tp: _tp_name(tp.topic, tp.partition) for tp in assigned}
        applied = await store.applied_offsets(names.values())
        now = time.time()
        idle: dict[str, int] = {}
        busy: list[str] = []
        for tp, name in names.items():
            offset = applied[name]
            last_offset, since = progress.get(name, (offset, 0.0))
            if offset != last_offset:
                since = now
            progress[name] = (offset, since)
            end = highwaters.get(tp)
            caught_up = end is not None and (offset if offset is not None else -1) + 1 >= end
            if caught_up and now - since >= IDLE_AFTER_S:
                idle[name] = int(now * 1000)
            else:
                busy.append(name)
        await store.mark_idle(idle, busy)

    return app
