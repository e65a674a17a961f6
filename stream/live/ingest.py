"""Counting a batch of Kafka records into Redis, one atomic step per partition, never skipping one.

The Faust agents hand over whatever ``take_events`` buffered; this module
turns it into per-partition batches: validates every record against the
event contract, sends what is invalid to the dead-letter topic with its
reason and origin, places each event in its slot (a success in its request's
slot) and applies the partition's batch with :meth:`Store.apply_batch`.

What keeps it exact (docs/design.md, invariant 1):

* A partition is counted only from the position this worker gave it, Redis's
  applied offset + 1 (:mod:`stream.live.cursors`); a partition not yet
  positioned since its assignment is positioned first and its batch dropped
  (the consumer reads it again from there).
* A batch is applied until it applies: Redis failing, a rebuild, a lost
  state all make it wait and retry (:mod:`stream.live.health`,
  :mod:`stream.live.namespace`); nothing raises out of :meth:`Ingester.apply`,
  so Faust never commits past a batch that was not counted.
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

from stream.events import Event, Rejected, TimeBounds, parse_record
from stream.formats import DeadLetter
from stream.live.cursors import Cursors
from stream.live.health import Backoff, Health
from stream.live.store import ApplyResult, ApplyStatus, Fence, SlotBatch, Store
from stream.sla.counting import EventKind
from stream.sla.slots import local_date, slot_start_ms

log = logging.getLogger(__name__)

FIELD_OF_KIND: dict[EventKind, str] = {"request": "requests", "success": "successes"}

Reseek = Callable[[str, int], Awaitable[None]]
"""Positions the consumer of partition ``topic:partition`` after an applied offset (-1: at the earliest record)."""
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


@dataclass(frozen=True)
class Record:
    """One Kafka record as consumed: where it came from and its raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None

    @property
    def tp(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class ParsedRecord:
    """A record with its valid events and refused parts, parsed once however often its batch is retried."""

    record: Record
    events: list[Event]
    """The events to count (all valid ones, unless the Ingester admits only some)."""
    rejected: list[Rejected]
    latest_ms: int = -1
    """The latest event time among all the record's valid events, counted or not: stream time moves with it."""
    skipped: int = 0
    """Valid events the Ingester did not admit (a replay's other months and apps)."""


@dataclass
class IngestStats:
    """Running totals of one worker's ingest, logged by the worker."""

    records: int = 0
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
            f"{self.records:,} records: {self.counted:,} events counted, {self.duplicates:,} duplicates, "
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

    async def apply(self, kind: EventKind, records: Iterable[Record]) -> None:
        """Count ``records`` (any mix of partitions, in consumption order) exactly once; returns when all are."""
        by_partition: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.tp].append(record)
        # Partitions go concurrently: one's records are parsed while Redis runs another's script.
        await asyncio.gather(*(self._apply_partition(kind, tp, batch) for tp, batch in by_partition.items()))

    async def position(self, tp: str) -> None:
        """Position the partition's consumer after the applied offset Redis holds now."""
        offsets = await self._health.until_redis_answers(lambda: self._store.applied_offsets([tp]))
        found = offsets[tp]
        await self._reseek(tp, -1 if found is None else found)
        self.stats.repositioned += 1

    async def _apply_partition(self, kind: EventKind, tp: str, batch: Sequence[Record]) -> None:
        cursor = self._cursors.get(tp)
        if cursor is None:
            self._cursors.saw(tp, batch)
            await self.position(tp)
            return
        records = self._cursors.admit(tp, batch)
        if not records:
            return
        bounds = self._bounds()
        parsed = [self._parse(r, kind, bounds) for r in records]
        await self._send_dead_letters(parsed)
        expected = cursor.applied
        while True:
            fence = await self._guard.writable()
            if cursor.generation is None:
                cursor.generation = fence.generation
            if cursor.generation != fence.generation:  # positioned in an earlier generation: read it again
                await self.position(tp)
                return
            result = await self._health.until_redis_answers(
                lambda fence=fence, expected=expected, parsed=parsed: self._apply_once(  # type: ignore[misc]
                    fence, kind, tp, expected, parsed
                )
            )
            status = result.status
            if status is ApplyStatus.OVERLAP:  # another worker applied part of it since we looked
                expected = result.applied_offset
                parsed = [p for p in parsed if p.record.offset > expected]
                continue
            if status in (ApplyStatus.APPLIED, ApplyStatus.ALREADY_APPLIED):
                if self._cursors.get(tp) is cursor:  # not sought again meanwhile (a rebalance)
                    cursor.applied = result.applied_offset
                self._tally(tp.rpartition(":")[0], parsed, result)
                return
            if status in (ApplyStatus.BEHIND, ApplyStatus.ROLLED_BACK):
                if status is ApplyStatus.BEHIND:
                    log.warning(
                        "%s: Redis holds applied offset %d, below the %d this worker continued from (Redis lost "
                        "writes): reading the partition again from there",
                        tp,
                        result.applied_offset,
                        expected,
                    )
                await self._guard.lost_writes(fence)
                await self._guard.writable()
                await self.position(tp)
                return
            # STATE_LOST or FENCED: wait until the namespace is live again, then read from its positions.
            self._guard.stale()
            await self._guard.writable()
            await self.position(tp)
            return

    def _parse(self, record: Record, kind: EventKind, bounds: TimeBounds) -> ParsedRecord:
        events, rejected = parse_record(record.value, kind, bounds)
        latest_ms = max((event.ts for event in events), default=-1)
        if self._admit is None:
            return ParsedRecord(record, events, rejected, latest_ms)
        admitted = [event for event in events if self._admit(event)]
        return ParsedRecord(record, admitted, rejected, latest_ms, len(events) - len(admitted))

    async def _apply_once(
        self, fence: Fence, kind: EventKind, tp: str, expected: int, parsed: Sequence[ParsedRecord]
    ) -> ApplyResult:
        ids_by_slot: dict[tuple[str, int], list[str]] = defaultdict(list)
        stream_ms = -1
        refused = 0
        for item in parsed:
            refused += len(item.rejected)
            stream_ms = max(stream_ms, item.latest_ms)
            for event in item.events:
                ids_by_slot[(event.app_id, slot_start_ms(event.counted_ts, self._tz))].append(event.event_id)
        slots = [SlotBatch(app, slot_ms, self._day(slot_ms), ids) for (app, slot_ms), ids in ids_by_slot.items()]
        offsets = [item.record.offset for item in parsed]
        return await self._store.apply_batch(
            fence, tp, expected, offsets, slots, FIELD_OF_KIND[kind], stream_ms, refused
        )

    async def _send_dead_letters(self, parsed: Sequence[ParsedRecord]) -> None:
        """Send every refused record or element, each retried until Kafka acknowledges it."""
        for item in parsed:
            record = item.record
            for rejected in item.rejected:
                letter = DeadLetter(record.topic, record.partition, record.offset, rejected)
                backoff = Backoff(cap_s=5.0)
                failed = False
                while True:
                    try:
                        await self._send_dead_letter(letter)
                        break
                    except Exception as error:  # noqa: BLE001 - a dead letter is never dropped: retry
                        if not failed:
                            log.warning("%s:%d: dead letter not sent (%s); retrying", record.tp, record.offset, error)
                            failed = True
                        await backoff.wait()

    def _tally(self, topic: str, parsed: Sequence[ParsedRecord], result: ApplyResult) -> None:
        for stats in (self.stats, self.by_topic[topic]):
            if result.status is ApplyStatus.ALREADY_APPLIED:
                stats.redelivered += 1
                continue
            stats.records += len(parsed)
            stats.skipped += sum(item.skipped for item in parsed)
            stats.dead_letters += sum(len(item.rejected) for item in parsed)
            stats.dead_letter_reasons.update(r.category for item in parsed for r in item.rejected)
            stats.counted += result.counted
            stats.duplicates += result.duplicates
            stats.late += result.late
