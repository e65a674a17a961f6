"""Counting topics again into a namespace: the one mechanism ``sla-stream rebuild`` and ``sla-stream replay`` share.

Both read the input topics with a plain consumer of their own (no group, no
commits, every partition assigned), from chosen start offsets to the end
offsets seen when they started, and hand each fetched batch to the same
:class:`stream.live.ingest.Ingester` the workers use; slots are closed by the
same :class:`stream.live.closer.Closer`. What differs is only where the state
goes (the live namespace, or a replay's own) and what the Ingester and Closer
send on (dead letters and verdicts to Kafka, or nowhere).

Example (the plan of what to read, by partition):
    >>> from aiokafka import TopicPartition
    >>> tp = TopicPartition("requests", 0)
    >>> plan = ReadPlan(starts={tp: 40}, ends={tp: 100})
    >>> plan.total, plan.done({tp: 70})
    (60, 30)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from stream.config import Settings
from stream.events import Event, TimeBounds
from stream.formats import InvalidExemption, decode_exemption
from stream.live.closer import Closer
from stream.live.cursors import Cursors
from stream.live.health import Health
from stream.live.ingest import Ingester, SendDeadLetter
from stream.live.store import Applied, Fence, Store
from stream.live.worker import WorkerStartError, partition_counts
from stream.sla.counting import EventKind

FETCH_MAX_RECORDS = 10_000
"""Records per fetch; each partition's share is handed on in steps of :data:`STEP_BYTES`."""
STEP_BYTES = 1 << 20
"""About this many bytes of record values per Ingester step (one Redis script call): some 8,000 events."""
STALL_S = 60.0
"""A read in which no partition moves for this long has lost Kafka."""


async def open_consumer(settings: Settings, kafka_options: Mapping[str, object]) -> AIOKafkaConsumer:
    """A started consumer outside any group: it commits nothing and reads only committed transactions, as workers do."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",  # as the workers: aborted transactions are never counted
        # Records deleted under the reading (retention) must stop it, never move it silently to the end.
        auto_offset_reset="none",
        **kafka_options,
    )
    await consumer.start()
    # aiokafka 0.14 starts a no-group consumer's coordinator task at the end of start(); a stop() before that task
    # first ran (a plan with nothing to read awaits nothing) cancels it unstarted and raises CancelledError out of
    # stop() (aio-libs/aiokafka#647). One turn of the loop lets it start, so stop() is clean whenever it comes.
    await asyncio.sleep(0)
    return consumer


def topic_partitions(settings: Settings) -> dict[str, int]:
    """The partition counts of the input and exemptions topics; :class:`RecountError` when Kafka cannot say."""
    topics = settings.topics
    try:
        return partition_counts(settings, (topics.requests, topics.successes, topics.exemptions))
    except WorkerStartError as error:
        raise RecountError(str(error)) from None


async def read_exemptions_topic(
    consumer: AIOKafkaConsumer, settings: Settings, partitions: int
) -> dict[str, bytes | None]:
    """The exemptions topic read whole: the latest value per exemption id (None: withdrawn)."""
    topic = settings.topics.exemptions
    plan = await whole_topic_plan(consumer, [TopicPartition(topic, p) for p in range(partitions)])
    return await latest_records(consumer, plan)


class RecountError(Exception):
    """A recount cannot go on (the namespace was taken over, Redis lost writes); printed as one line."""


class HeldNamespace:
    """A recount writes with one fence throughout; any refusal means the namespace is no longer its own."""

    def __init__(self, fence: Fence, what: str) -> None:
        self._fence = fence
        self._what = what

    async def writable(self) -> Fence:
        return self._fence

    def stale(self) -> None:
        raise RecountError(f"another {self._what} (or a reset of Redis) took the namespace over; run it again")

    async def lost_writes(self, fence: Fence) -> None:
        raise RecountError(f"Redis lost writes during the {self._what}; run it again")


def recount_ingester(
    settings: Settings,
    store: Store,
    fence: Fence,
    input_tps: Sequence[str],
    send_dead_letter: SendDeadLetter,
    what: str,
    admit: Callable[[Event], bool] | None = None,
) -> Ingester:
    """The workers' Ingester for a recount into ``store``: every partition positioned before its first record.

    ``admit`` keeps only the events it accepts (a replay's month and apps);
    plausible times are judged against the clock now, as ``report`` does.
    """

    def bounds() -> TimeBounds:
        return settings.event_bounds(int(time.time() * 1000))

    async def no_reseek(tp: str, applied: Applied) -> None:
        raise RecountError(f"{tp}: Redis changed under the {what} (applied offset {applied.least}); run it again")

    cursors = Cursors()
    for tp in input_tps:
        cursors.sought(tp, [-1] * len(store.shards))  # the namespace holds nothing of it: any offset continues it
    return Ingester(
        store,
        settings.policy.timezone,
        bounds,
        send_dead_letter,
        Health(store.prefix),
        HeldNamespace(fence, what),
        cursors,
        no_reseek,
        admit=admit,
    )


def tp_name(tp: TopicPartition) -> str:
    """``topic:partition``, the name the store and the Ingester know a partition by."""
    return f"{tp.topic}:{tp.partition}"


@dataclass(frozen=True)
class ReadPlan:
    """What to read of each partition: from ``starts`` up to (not including) ``ends``."""

    starts: Mapping[TopicPartition, int]
    ends: Mapping[TopicPartition, int]

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self.starts)

    @property
    def total(self) -> int:
        """Offsets to read in all (transaction markers included: they are offsets too)."""
        return sum(max(0, self.ends[tp] - self.starts[tp]) for tp in self.starts)

    def done(self, positions: Mapping[TopicPartition, int]) -> int:
        """Offsets read so far, given the consumer's positions."""
        return sum(max(0, min(positions[tp], self.ends[tp]) - self.starts[tp]) for tp in self.starts if tp in positions)


async def whole_topic_plan(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> ReadPlan:
    """Every retained record of ``partitions``, up to their end offsets as of now."""
    starts = await consumer.beginning_offsets(list(partitions))
    ends = await consumer.end_offsets(list(partitions))
    return ReadPlan(starts, ends)


async def latest_records(consumer: AIOKafkaConsumer, plan: ReadPlan) -> dict[str, bytes | None]:
    """A compacted topic read as the plan says, reduced to the latest value per key (None: a tombstone)."""
    latest: dict[str, bytes | None] = {}

    async def keep(tp: TopicPartition, messages: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for message in messages:
            latest[(message.key or b"").decode("utf-8", errors="replace")] = message.value

    await read_plan(consumer, plan, keep)
    return latest


def exemptions_in_force(latest: Mapping[str, bytes | None]) -> dict[str, dict[str, Any]]:
    """The exemption records in force among the topic's latest values, by id, decoded and checked.

    Tombstones and invalid records (dead-lettered when the workers met them) are left out.
    """
    in_force = {}
    for exemption_id, value in sorted(latest.items()):
        if value is None:
            continue
        try:
            in_force[exemption_id] = decode_exemption(value)
        except InvalidExemption:
            continue
    return in_force


async def load_exemptions(store: Store, latest: Mapping[str, bytes | None]) -> int:
    """Put the exemptions in force among the topic's latest records into ``store``; how many."""
    in_force = exemptions_in_force(latest)
    for exemption_id, record in in_force.items():
        await store.put_exemption(exemption_id, record)
    return len(in_force)


Handle = Callable[[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
"""Takes one partition's fetched records, in offset order."""


async def read_plan(
    consumer: AIOKafkaConsumer,
    plan: ReadPlan,
    handle: Handle,
    between: Callable[[int], Awaitable[None]] | None = None,
    stall_s: float = STALL_S,
) -> None:
    """Read every partition of ``plan`` from its start to its end, handing each fetched batch to ``handle``.

    ``between`` is called after every fetch with the offsets read so far (for
    progress and periodic work). Partitions are paused as they reach their end,
    so a topic written to meanwhile is read only as far as the plan says.
    Raises :class:`RecountError` when records to read were deleted meanwhile,
    or when fetches come back empty for ``stall_s`` (Kafka gone: aiokafka
    then returns empty fetches rather than failing).
    """
    partitions = plan.partitions
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, plan.starts[tp])
    pending = {tp for tp in partitions if plan.starts[tp] < plan.ends[tp]}
    for tp in set(partitions) - pending:
        consumer.pause(tp)
    positions = {tp: plan.starts[tp] for tp in partitions}
    moved_at = time.monotonic()
    while pending:
        try:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
        except OffsetOutOfRangeError as error:
            gone = ", ".join(f"{tp.topic} (partition {tp.partition})" for tp in error.args[0])
            raise RecountError(f"records of {gone} were deleted while being read (retention); run it again") from None
        if fetched:
            moved_at = time.monotonic()
        # Partitions go concurrently: one's records are parsed while Redis runs another's step. A failing one
        # cancels the others, and its own error (not a group of one) goes on, as its callers expect.
        try:
            async with asyncio.TaskGroup() as steps:
                for tp, messages in fetched.items():
                    steps.create_task(_handle_in_steps(handle, tp, [m for m in messages if m.offset < plan.ends[tp]]))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        for tp in list(pending):
            position = positions[tp] = await consumer.position(tp)
            if position >= plan.ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)
        if pending and time.monotonic() - moved_at > stall_s:
            tp = min(pending)
            raise RecountError(
                f"no records of {tp.topic} (partition {tp.partition}) arrived for {stall_s:.0f} s, at offset "
                f"{positions[tp]:,} of {plan.ends[tp]:,}: is Kafka answering?"
            )
        if between is not None:
            await between(plan.done(positions))


async def _handle_in_steps(
    handle: Handle, tp: TopicPartition, messages: Sequence[ConsumerRecord[bytes, bytes]]
) -> None:
    """Hand one partition's fetched records on in order, in steps of about :data:`STEP_BYTES` of values.

    A fetch of JSON arrays can hold a million events; one Redis step for all
    of them would hold Redis (and the live workers using it) for a noticeable
    time and swell its memory with the script's arguments.
    """
    step: list[ConsumerRecord[bytes, bytes]] = []
    size = 0
    for message in messages:
        step.append(message)
        size += len(message.value or b"")
        if size >= STEP_BYTES:
            await handle(tp, step)
            step, size = [], 0
    if step:
        await handle(tp, step)


def ingest_handle(ingester: Ingester, kinds: Mapping[str, EventKind]) -> Handle:
    """A :data:`Handle` that counts input records (``kinds``: the event kind of each input topic)."""

    async def count(tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await ingester.apply_partition(kinds[tp.topic], tp.topic, tp.partition, records)

    return count


async def mark_read_partitions_idle(store: Store, plan: ReadPlan, consumer: AIOKafkaConsumer | None) -> None:
    """Partitions read to their end (all of them without a consumer) no longer hold the watermark back.

    Marked idle, their stream time follows the clock (:mod:`stream.live.clock`);
    the mark is trusted for a few seconds only, so it is renewed while a recount runs.
    """
    now_ms = int(time.time() * 1000)
    done = {}
    for tp in plan.partitions:
        if consumer is None or plan.starts[tp] >= plan.ends[tp] or await consumer.position(tp) >= plan.ends[tp]:
            done[tp_name(tp)] = now_ms
    await store.mark_idle(done, ())


async def close_all(closer: Closer, fence: Fence, store: Store, plan: ReadPlan) -> int:
    """Once every partition is read: close every slot the clock allows, renewing the idle marks each tick.

    With every partition idle the watermark is the clock less ``idle_lag``, so
    whatever any partition's own stream time, every slot but the last
    minutes' closes. How many slots were closed.
    """
    closed = 0
    while True:
        await mark_read_partitions_idle(store, plan, None)
        result = await closer.tick(fence, ledgers=False)
        closed += result.closed
        if not (result.closed or result.revised or result.published):
            await closer.refresh_ledgers()
            return closed


async def close_due(closer: Closer, fence: Fence) -> int:
    """Tick ``closer`` until a tick finds nothing to close, judge again or publish, then recompute the month
    ledgers once; how many slots it closed."""
    closed = 0
    while True:
        result = await closer.tick(fence, ledgers=False)
        closed += result.closed
        if not (result.closed or result.revised or result.published):
            await closer.refresh_ledgers()
            return closed


class Every:
    """True at most once per ``seconds`` of the clock: for periodic work inside a reading loop.

    Example:
        >>> now = [0.0]
        >>> every = Every(5.0, clock=lambda: now[0])
        >>> every.due(), every.due()
        (False, False)
        >>> now[0] = 5.0
        >>> every.due(), every.due()
        (True, False)
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        now = self._clock()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True
