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

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.formats import DeadLetter
from stream.kafka_security import aiokafka_options, redact
from stream.live.closer import Closer
from stream.live.recount import (
    Every,
    RecountError,
    close_due,
    ingest_handle,
    load_exemptions,
    open_consumer,
    read_exemptions_topic,
    read_plan,
    recount_ingester,
    topic_partitions,
    tp_name,
    whole_topic_plan,
)
from stream.live.store import Fence, LayoutMismatch, Store, redis_client
from stream.live.verdict_batches import send_in_batches

PROGRESS_EVERY_S = 5.0
CLOSE_EVERY_S = 1.0
"""How often the closer runs while the rebuild counts: slots close, and their ids go, as stream time passes."""


class RebuildError(RecountError):
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


async def rebuild(settings: Settings, say: Callable[[str], None], force: bool = False) -> RebuildSummary:
    """Recount the live state of ``settings``' namespace from the topics; see the module docstring."""
    started = time.monotonic()
    kafka_options = aiokafka_options(settings.kafka_security)
    try:
        counts = topic_partitions(settings)
    except RecountError as error:
        raise RebuildError(str(error)) from None
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    store = Store.of(redis, settings)
    try:
        try:
            meta = await store.meta()
        except LayoutMismatch:
            meta = None  # laid out by another version, or in another number of shards: unusable as it is
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
            kinds = settings.topics.input_kinds
            partitions = [TopicPartition(topic, p) for topic in kinds for p in range(counts[topic])]
            closer = _closer(settings, store, producer, [tp_name(tp) for tp in partitions])
            summary.closed = await _count_inputs(
                settings, store, fence, producer, closer, partitions, summary, say, kafka_options
            )
            summary.closed += await close_due(closer, fence)
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
    except RecountError as error:
        raise RebuildError(str(error)) from None
    finally:
        await redis.aclose()


async def _read_exemptions(
    settings: Settings, store: Store, kafka_options: Mapping[str, object], counts: Mapping[str, int]
) -> int:
    """The exemptions topic's latest record per key, into Redis (invalid ones were dead-lettered when live)."""
    consumer = await open_consumer(settings, kafka_options)
    try:
        latest = await read_exemptions_topic(consumer, settings, counts[settings.topics.exemptions])
    finally:
        await consumer.stop()
    return await load_exemptions(store, latest)


async def _count_inputs(
    settings: Settings,
    store: Store,
    fence: Fence,
    producer: AIOKafkaProducer,
    closer: Closer,
    partitions: Sequence[TopicPartition],
    summary: RebuildSummary,
    say: Callable[[str], None],
    kafka_options: Mapping[str, object],
) -> int:
    """Count every input partition up to its end offset as of now, closing slots as their stream time passes
    (so Redis holds about ``dedup_hold`` of event ids, not the whole topics'); how many slots were closed."""

    async def send_dead_letter(letter: DeadLetter) -> None:
        await (await producer.send(settings.topics.dead_letter, key=letter.key, value=letter.value()))

    kinds = settings.topics.input_kinds
    input_tps = [tp_name(tp) for tp in partitions]
    ingester = recount_ingester(settings, store, fence, input_tps, send_dead_letter, "rebuild")
    closed = 0
    consumer = await open_consumer(settings, kafka_options)
    try:
        plan = await whole_topic_plan(consumer, partitions)
        say(f"counting {plan.total:,} offsets of {len(partitions)} input partitions")
        if plan.total == 0:  # not an error: workers resume from the empty state and count what comes
            deleted = sum(plan.starts.values())
            held = f"all {deleted:,} offsets they held were deleted, by retention or deleteRecords" if deleted else None
            say(f"the input topics hold no records ({held or 'never written to'}): the rebuilt state is empty")
        every, closing = Every(PROGRESS_EVERY_S), Every(CLOSE_EVERY_S)

        async def progress(done: int) -> None:
            nonlocal closed
            if every.due():
                say(f"counted {done:,} of {plan.total:,} offsets ({ingester.stats.counted:,} events)")
            if closing.due():
                closed += (await closer.tick(fence, ledgers=False)).closed

        await read_plan(consumer, plan, ingest_handle(ingester, kinds), progress)
    finally:
        await consumer.stop()
    stats = ingester.stats
    summary.records, summary.counted, summary.dead_letters = stats.records, stats.counted, stats.dead_letters
    return closed


def _closer(settings: Settings, store: Store, producer: AIOKafkaProducer, input_tps: Sequence[str]) -> Closer:
    """The rebuild's closer over every input partition, publishing its verdicts to the verdicts topic in record
    batches, as the workers do (:mod:`stream.live.verdict_batches`)."""

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        await send_in_batches(producer, settings.topics.verdicts, messages)

    return Closer(store, settings, input_tps, send_verdicts)
