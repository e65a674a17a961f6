"""Counting a batch of Kafka records into Redis, one atomic step per partition and shard, never skipping one.

The worker hands over each partition's fetched batch whole
(:mod:`stream.live.faust_batches`); a recount hands over steps of what it
reads. This module validates every record against the
event contract, sends what is invalid to the dead-letter topic with its
reason and origin, places each event in its slot (a success in its request's
slot) and applies the partition's batch in each shard of the state with
:meth:`Store.apply_steps` (every shard records how far it applied the partition).

What keeps it exact (docs/design.md, invariant 1):

* A partition is counted only from the position this worker gave it, the
  least applied offset of the shards + 1 (:mod:`stream.live.cursors`); each
  shard skips what it applied already, so a batch that reached some shards
  before a crash is completed, never counted twice; a partition not yet
  positioned since its assignment is positioned first and its batch dropped
  (the consumer reads it again from there).
* A batch is applied until it applies: Redis failing, a rebuild, a lost
  state all make it wait and retry (:mod:`stream.live.health`,
  :mod:`stream.live.namespace`), and the worker's fetch loop waits for it:
  nothing is fetched past a batch that was not counted.
* Redis holding less than this worker's reading continues from (it lost
  writes) makes the partition be read again from Redis's offset.
* No record can take others down: parsing is total (every record is counted
  or dead-lettered alone, :func:`stream.events.parse_record`).

Nothing here depends on Faust, so it is tested with plain records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

from stream.events import Event, TimeBounds, parse_record
from stream.formats import DeadLetter
from stream.live.cursors import Cursors
from stream.live.health import Backoff, Health
from stream.live.store import Applied, ApplyResult, ApplyStatus, BatchStep, Fence, SlotBatch, Store
from stream.sla.counting import EventKind
from stream.sla.coverage import MINUTE_MS, MonthBits
from stream.sla.slots import local_date, slot_start_ms

log = logging.getLogger(__name__)

FIELD_OF_KIND: dict[EventKind, str] = {"request": "requests", "success": "successes"}

Reseek = Callable[[str, Applied], Awaitable[None]]
"""Positions the consumer of partition ``topic:partition`` after where every shard applied it (-1: the earliest)."""
SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]
"""Sends a dead letter; returns once Kafka acknowledged it, raises if it could not."""


class Namespace(Protocol):
    """Which namespace to write to (:class:`stream.live.namespace.NamespaceGuard` for workers)."""

    async def writable(self) -> Fence:
        """The fence to write with, once the namespace may be written to."""
        ...

    def stale(self) -> None:
        """A step was refused by the namespace's marker: the fence held is no longer valid."""
        ...

    async def lost_writes(self, fence: Fence) -> None:
        """Redis holds less than was applied under ``fence``: make what follows distinguishable, then go stale."""
        ...


class ConsumedRecord(Protocol):
    """A Kafka record as consumed (aiokafka's ``ConsumerRecord`` is one): where it came from and its raw value."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Record:
    """One Kafka record, made by hand (tests, tools): a :class:`ConsumedRecord`."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class ParsedBatch:
    """One partition's records parsed in one pass, once however often the batch is retried: what its step needs."""

    first_offset: int
    last_offset: int
    slots: list[SlotBatch]
    """The admitted events' ids by app and slot (a success in its request's slot)."""
    letters: list[DeadLetter]
    """Every refused record or array element."""
    records: int
    latest_ms: int = -1
    """The latest event time among all valid events, counted or not: stream time moves with it."""
    skipped: int = 0
    """Valid events the Ingester did not admit (a replay's other months and apps)."""
    minutes: set[int] = field(default_factory=set)
    """The minutes (``ts // MINUTE_MS``) all valid events happened in, counted or not: the input's coverage."""


@dataclass
class IngestStats:
    """Running totals of one worker's ingest, logged by the worker."""

    read: int = 0
    """Records handed to the ingester, whatever became of them (a positioning or a redelivery drops some)."""
    records: int = 0
    """Records counted or dead-lettered."""
    counted: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    redelivered: int = 0
    """Partition batches skipped whole because Redis had applied them already (a redelivery)."""
    repositioned: int = 0
    """Times a partition was positioned at Redis's applied offset (assignments, Redis behind, rebuilds)."""
    skipped: int = 0
    """Valid events not admitted for counting (a replay's other months and apps)."""
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    """Dead letters by :attr:`stream.events.Rejected.category`."""

    def __str__(self) -> str:
        return (
            f"{self.read:,} records read, {self.records:,} applied: {self.counted:,} events counted, "
            f"{self.duplicates:,} duplicates, "
            f"{self.late:,} late, {self.dead_letters:,} dead letters; {self.redelivered:,} redelivered batches "
            f"skipped, {self.repositioned:,} partition positionings"
        )


class TotalsLog:
    """Logs a worker's ingest totals and health state, only when the line changed since the last one logged."""

    def __init__(self) -> None:
        self._last = ""

    def log_if_changed(self, stats: IngestStats, state: str) -> None:
        line = f"{stats} ({state})"
        if line != self._last:
            log.info("ingest: %s", line)
            self._last = line


class Ingester:
    """Applies batches of input records of one kind to the store, each partition from Redis's position."""

    def __init__(
        self,
        store: Store,
        tz: ZoneInfo,
        bounds: Callable[[], TimeBounds],
        send_dead_letter: SendDeadLetter,
        health: Health,
        guard: Namespace,
        cursors: Cursors,
        reseek: Reseek,
        admit: Callable[[Event], bool] | None = None,
    ) -> None:
        self._store = store
        self._tz = tz
        self._bounds = bounds
        self._send_dead_letter = send_dead_letter
        self._health = health
        self._guard = guard
        self._cursors = cursors
        self._reseek = reseek
        self._admit = admit
        """Which valid events to count (None: all); the others still move stream time."""
        self._day_of_slot: dict[int, str] = {}
        self._month_bits = MonthBits(tz)
        self.stats = IngestStats()
        """This worker's totals since it started."""
        self.by_topic: dict[str, IngestStats] = defaultdict(IngestStats)
        """The same, per input topic (the metrics' ``topic`` label)."""

    def _day(self, slot_ms: int) -> str:
        day = self._day_of_slot.get(slot_ms)
        if day is None:
            if len(self._day_of_slot) > 100_000:  # bounded memory: a cache, not a record
                self._day_of_slot.clear()
            day = self._day_of_slot[slot_ms] = local_date(slot_ms, self._tz).isoformat()
        return day

    async def apply(self, kind: EventKind, records: Iterable[ConsumedRecord]) -> None:
        """Count ``records`` (any mix of partitions, in consumption order) exactly once; returns when all are."""
        by_partition: dict[tuple[str, int], list[ConsumedRecord]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)
        # Partitions go concurrently: one's records are parsed while Redis runs another's script.
        await asyncio.gather(*(self.apply_partition(kind, t, p, batch) for (t, p), batch in by_partition.items()))

    async def apply_partition(
        self, kind: EventKind, topic: str, partition: int, batch: Sequence[ConsumedRecord]
    ) -> None:
        """Count one partition's ``batch`` (in offset order) exactly once; returns when it is."""
        await self._apply_partition(kind, f"{topic}:{partition}", batch)

    def took(self, topic: str, records: int) -> None:
        """``records`` of ``topic`` were fetched and handed over (once per batch, however often its step is tried)."""
        for stats in (self.stats, self.by_topic[topic]):
            stats.read += records

    async def position(self, tp: str) -> None:
        """Position the partition's consumer after the applied offset every shard holds now."""
        applied = (await self._health.until_redis_answers(lambda: self._store.applied_offsets([tp])))[tp]
        await self._reseek(tp, applied)
        self.stats.repositioned += 1

    async def _apply_partition(self, kind: EventKind, tp: str, batch: Sequence[ConsumedRecord]) -> None:
        cursor = self._cursors.get(tp)
        if cursor is None:
            self._cursors.saw(tp, batch)
            await self.position(tp)
            return
        records = self._cursors.admit(tp, batch)
        if not records:
            return
        bounds = self._bounds()
        parsed = self._parse(records, kind, bounds)
        await self._send_dead_letters(parsed.letters)
        store, field = self._store, FIELD_OF_KIND[kind]
        expected = list(cursor.shards)
        steps = self._steps(expected, parsed)
        while steps:
            fence = await self._guard.writable()
            if cursor.generation is None:
                cursor.generation = fence.generation
            if cursor.generation != fence.generation:  # positioned in an earlier generation: read it again
                await self.position(tp)
                return
            results = await self._health.until_redis_answers(
                lambda fence=fence, steps=steps: store.apply_steps(fence, tp, field, steps)  # type: ignore[misc]
            )
            overlapped: dict[int, BatchStep] = {}
            for shard, result in results.items():
                status = result.status
                if status is ApplyStatus.OVERLAP:  # another worker applied part of it since we looked
                    expected[shard] = result.applied_offset
                    # Parsed again without the applied part (its dead letters are out already): rare, kept simple.
                    rest = self._parse([r for r in records if r.offset > result.applied_offset], kind, bounds)
                    overlapped |= self._steps(expected, rest, only=[shard])
                elif status in (ApplyStatus.APPLIED, ApplyStatus.ALREADY_APPLIED):
                    if self._cursors.get(tp) is cursor:  # not sought again meanwhile (a rebalance)
                        cursor.shards[shard] = result.applied_offset
                    self._tally(tp.rpartition(":")[0], parsed if shard == store.home.index else None, result)
                elif status in (ApplyStatus.BEHIND, ApplyStatus.ROLLED_BACK):
                    if status is ApplyStatus.BEHIND:
                        log.warning(
                            "%s: Redis holds applied offset %d, below the %d this worker continued from (Redis lost "
                            "writes): reading the partition again from there",
                            tp,
                            result.applied_offset,
                            expected[shard],
                        )
                    await self._guard.lost_writes(fence)
                    await self._guard.writable()
                    await self.position(tp)
                    return
                else:  # STATE_LOST or FENCED: wait until the namespace is live again, then read from its positions.
                    self._guard.stale()
                    await self._guard.writable()
                    await self.position(tp)
                    return
            steps = overlapped

    def _steps(
        self, expected: Sequence[int], parsed: ParsedBatch, only: Iterable[int] | None = None
    ) -> dict[int, BatchStep]:
        """The batch's step for each shard (``only`` those), continuing from ``expected`` in each."""
        return self._store.batch_steps(
            expected,
            (parsed.first_offset, parsed.last_offset),
            parsed.slots,
            parsed.latest_ms,
            len(parsed.letters),
            self._month_bits.of(parsed.minutes),
            only,
        )

    def _parse(self, records: Sequence[ConsumedRecord], kind: EventKind, bounds: TimeBounds) -> ParsedBatch:
        """Validate, place and group ``records`` (in offset order) in one pass: the hot loop of a worker."""
        ids_by_slot: dict[tuple[str, int], list[str]] = defaultdict(list)
        letters: list[DeadLetter] = []
        latest_ms = -1
        skipped = 0
        minutes: set[int] = set()
        minute = -MINUTE_MS  # the start of the minute last added (none yet: event times are not negative)
        admit = self._admit
        tz = self._tz
        for record in records:
            events, rejected = parse_record(record.value, kind, bounds)
            for refusal in rejected:
                letters.append(DeadLetter(record.topic, record.partition, record.offset, refusal))
            for event in events:
                ts = event.ts
                if ts > latest_ms:
                    latest_ms = ts
                if not minute <= ts < minute + MINUTE_MS:  # events come mostly in time order: a set add a minute
                    minute = ts - ts % MINUTE_MS
                    minutes.add(minute // MINUTE_MS)
                if admit is not None and not admit(event):
                    skipped += 1
                    continue
                ids_by_slot[(event.app_id, slot_start_ms(event.counted_ts, tz))].append(event.event_id)
        slots = [SlotBatch(app, slot_ms, self._day(slot_ms), ids) for (app, slot_ms), ids in ids_by_slot.items()]
        return ParsedBatch(
            records[0].offset, records[-1].offset, slots, letters, len(records), latest_ms, skipped, minutes
        )

    async def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Send every refused record or element, each retried until Kafka acknowledges it."""
        for letter in letters:
            backoff = Backoff(cap_s=5.0)
            failed = False
            while True:
                try:
                    await self._send_dead_letter(letter)
                    break
                except Exception as error:  # noqa: BLE001 - a dead letter is never dropped: retry
                    if not failed:
                        log.warning(
                            "%s:%d:%d: dead letter not sent (%s); retrying",
                            letter.topic,
                            letter.partition,
                            letter.offset,
                            error,
                        )
                        failed = True
                    await backoff.wait()

    def _tally(self, topic: str, parsed: ParsedBatch | None, result: ApplyResult) -> None:
        """Add a shard's result to the totals; the home shard's (``parsed`` given) also counts the records."""
        for stats in (self.stats, self.by_topic[topic]):
            if result.status is ApplyStatus.ALREADY_APPLIED:
                if parsed is not None:
                    stats.redelivered += 1
                continue
            if parsed is not None:
                stats.records += parsed.records
                stats.skipped += parsed.skipped
                stats.dead_letters += len(parsed.letters)
                stats.dead_letter_reasons.update(letter.rejected.category for letter in parsed.letters)
            stats.counted += result.counted
            stats.duplicates += result.duplicates
            stats.late += result.late
