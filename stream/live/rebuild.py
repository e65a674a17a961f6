"""``sla-stream rebuild``: recount the live state from the topics after Redis lost it.

The topics keep at least 100 days (docs/design.md, invariant 4), so the state can
be counted again from them, through the same code the workers use: the
:class:`stream.live.ingest.Ingester` applies every input record from the earliest
retained offset to the end offsets seen at the start, and the
:class:`stream.live.closer.Closer` closes the slots stream time allows and
publishes their verdicts.

Steps, each safe to repeat (a rebuild that dies is simply run again):

1. The namespace's marker is set to a new generation in state
   ``rebuilding``, then every other key under the prefix is deleted. From
   that instant every worker's step is refused (fenced), and the workers
   wait.
2. The exemptions topic is read whole (the latest record per key).
3. The input topics are counted, partition batch by partition batch.
   Refused records are dead-lettered again (keyed by their origin, so a
   reader can tell a repeat).
4. Due slots are closed and their verdicts published with the new
   generation: revisions start again at 1, and readers of the compacted
   verdicts topic keep, per key, the record of the largest generation, then
   the largest revision.
5. The marker becomes ``live``: workers read their partitions again from the
   rebuilt positions and carry on; records produced meanwhile are counted by
   them.

Slots the rebuilt stream time does not close yet (the last minutes, quiet
partitions) are closed by the workers' closer as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.events import TimeBounds
from stream.formats import DeadLetter, InvalidExemption, decode_exemption
from stream.kafka_security import aiokafka_options, redact
from stream.live.closer import Closer
from stream.live.cursors import Cursors
from stream.live.health import Health
from stream.live.ingest import Ingester, Record
from stream.live.store import Fence, Store, redis_client
from stream.live.worker import WorkerStartError, partition_counts
from stream.sla.counting import EventKind

log = logging.getLogger(__name__)

FETCH_MAX_RECORDS = 10_000
PROGRESS_EVERY_S = 5.0


class RebuildError(Exception):
    """Why a rebuild cannot run or stopped; printed as one line."""


@dataclass
class RebuildSummary:
    generation: int
    records: int = 0
    counted: int = 0
    dead_letters: int = 0
    exemptions: int = 0
    closed: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"rebuilt generation {self.generation} in {self.seconds:.1f} s: {self.records:,} records, "
            f"{self.counted:,} events counted, {self.dead_letters:,} dead letters, {self.exemptions} exemptions, "
            f"{self.closed:,} slots closed; workers resume from the rebuilt positions"
        )


class _RebuildNamespace:
    """The rebuild writes with one fence; a refusal means another rebuild took the namespace over."""

    def __init__(self, fence: Fence) -> None:
        self._fence = fence

    async def writable(self) -> Fence:
        return self._fence

    def stale(self) -> None:
        raise RebuildError("another rebuild (or a reset of Redis) took the namespace over; run rebuild again")

    async def lost_writes(self, fence: Fence) -> None:
        raise RebuildError("Redis lost writes during the rebuild; run rebuild again")


async def _no_reseek(tp: str, applied: int) -> None:
    raise RebuildError(f"{tp}: Redis changed under the rebuild (applied offset {applied}); run rebuild again")


async def rebuild(settings: Settings, say: Callable[[str], None], force: bool = False) -> RebuildSummary:
    """Recount the live state of ``settings``' namespace from the topics; see the module docstring."""
    started = time.monotonic()
    kafka_options = aiokafka_options(settings.kafka_security)
    topics = settings.topics
    try:
        counts = partition_counts(settings, (topics.requests, topics.successes, topics.exemptions))
    except WorkerStartError as error:
        raise RebuildError(str(error)) from None
    redis = redis_client(settings.redis_url)
    store = Store(redis, settings.key_prefix)
    try:
        meta = await store.meta()
        if meta is not None and meta.state == "live" and not force:
            raise RebuildError(
                f"the live state under key prefix {settings.key_prefix!r} is in place (generation "
                f"{meta.generation}); nothing to rebuild (--force recounts it anyway)"
            )
        fence = Fence(int(time.time() * 1000), "rebuilding")
        summary = RebuildSummary(fence.generation)
        deleted = await store.begin_rebuild(fence.generation)
        say(f"rebuilding generation {fence.generation}: workers pause; {deleted:,} old keys removed")
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **kafka_options)
        await producer.start()
        try:
            summary.exemptions = await _read_exemptions(settings, store, kafka_options, counts)
            input_tps = await _count_inputs(settings, store, fence, producer, summary, say, kafka_options, counts)
            summary.closed = await _close(settings, store, fence, producer, input_tps)
        finally:
            await producer.stop()
        if not await store.finish_rebuild(fence.generation):
            raise RebuildError("another rebuild took the namespace over before this one finished")
        summary.seconds = time.monotonic() - started
        return summary
    except KafkaError as error:
        raise RebuildError(redact(f"Kafka at {settings.kafka_bootstrap} failed during the rebuild: {error}")) from None
    except (RedisError, OSError) as error:
        raise RebuildError(redact(f"Redis at {settings.redis_url} failed during the rebuild: {error}")) from None
    finally:
        await redis.aclose()


async def _consumer(settings: Settings, kafka_options: Mapping[str, object]) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",  # as the workers: aborted transactions are never counted
        **kafka_options,
    )
    await consumer.start()
    return consumer


async def _read_all(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Assign ``partitions`` from their earliest records; their start and end offsets as of now."""
    consumer.assign(list(partitions))
    starts = await consumer.beginning_offsets(list(partitions))
    ends = await consumer.end_offsets(list(partitions))
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    return starts, ends


async def _positions(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The consumer's position (next offset to read) in each partition."""
    return {tp: await consumer.position(tp) for tp in partitions}


async def _read_exemptions(
    settings: Settings, store: Store, kafka_options: Mapping[str, object], counts: Mapping[str, int]
) -> int:
    """The exemptions topic's latest record per key, into Redis (invalid ones were dead-lettered when live)."""
    consumer = await _consumer(settings, kafka_options)
    try:
        topic = settings.topics.exemptions
        partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
        _, ends = await _read_all(consumer, partitions)
        latest: dict[str, bytes | None] = {}
        while any(at < ends[tp] for tp, at in (await _positions(consumer, partitions)).items()):
            for _, messages in (await consumer.getmany(timeout_ms=1000)).items():
                for message in messages:
                    latest[(message.key or b"").decode("utf-8", errors="replace")] = message.value
    finally:
        await consumer.stop()
    kept = 0
    for exemption_id, value in latest.items():
        if value is None:
            continue
        try:
            record = decode_exemption(value)
        except InvalidExemption:
            continue
        await store.put_exemption(exemption_id, record)
        kept += 1
    return kept


async def _count_inputs(
    settings: Settings,
    store: Store,
    fence: Fence,
    producer: AIOKafkaProducer,
    summary: RebuildSummary,
    say: Callable[[str], None],
    kafka_options: Mapping[str, object],
    counts: Mapping[str, int],
) -> list[str]:
    """Count every input partition up to its end offset as of now; the partitions' ``topic:partition`` names."""

    async def send_dead_letter(letter: DeadLetter) -> None:
        await (await producer.send(settings.topics.dead_letter, key=letter.key, value=letter.value()))

    def bounds() -> TimeBounds:
        return settings.event_bounds(int(time.time() * 1000))

    cursors = Cursors()
    ingester = Ingester(
        store,
        settings.policy.timezone,
        bounds,
        send_dead_letter,
        Health(settings.key_prefix),
        _RebuildNamespace(fence),
        cursors,
        _no_reseek,
    )
    kinds: dict[str, EventKind] = {settings.topics.requests: "request", settings.topics.successes: "success"}
    consumer = await _consumer(settings, kafka_options)
    try:
        partitions = [TopicPartition(topic, p) for topic in kinds for p in range(counts[topic])]
        starts, ends = await _read_all(consumer, partitions)
        for tp in partitions:
            cursors.sought(f"{tp.topic}:{tp.partition}", -1)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        say(f"counting {total:,} offsets of {len(partitions)} input partitions")
        last_said = time.monotonic()
        pending = {tp for tp in partitions if starts[tp] < ends[tp]}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            for tp, messages in fetched.items():
                records = [Record(m.topic, m.partition, m.offset, m.value) for m in messages if m.offset < ends[tp]]
                if records:
                    await ingester.apply(kinds[tp.topic], records)
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
            if time.monotonic() - last_said >= PROGRESS_EVERY_S:
                at = await _positions(consumer, partitions)
                done = sum(min(at[tp], ends[tp]) - starts[tp] for tp in partitions)
                say(f"counted {done:,} of {total:,} offsets ({ingester.stats.counted:,} events)")
                last_said = time.monotonic()
    finally:
        await consumer.stop()
    stats = ingester.stats
    summary.records, summary.counted, summary.dead_letters = stats.records, stats.counted, stats.dead_letters
    return [f"{tp.topic}:{tp.partition}" for tp in partitions]


async def _close(
    settings: Settings, store: Store, fence: Fence, producer: AIOKafkaProducer, input_tps: Sequence[str]
) -> int:
    """Close every slot the rebuilt stream time allows, publishing the verdicts; how many were closed."""

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        sent = [await producer.send(settings.topics.verdicts, key=k.encode(), value=v.encode()) for k, v in messages]
        await asyncio.gather(*sent)

    closer = Closer(store, settings, input_tps, send_verdicts)
    closed = 0
    while True:
        result = await closer.tick(fence)
        closed += result.closed
        if not (result.closed or result.revised or result.published):
            return closed
