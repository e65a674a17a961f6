"""Counting a batch of Kafka records into Redis, one atomic step per partition.

The Faust agents hand over whatever ``take_events`` buffered; this module
turns it into per-partition batches: validates every record against the
event contract, sends what is invalid to the dead-letter topic with its
reason and origin, places each event in its slot (a success in its request's
slot) and applies the partition's batch with :meth:`Store.apply_batch`.
Nothing here depends on Faust, so it is tested with plain records.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from stream.events import Rejected, TimeBounds, parse_record
from stream.sla.counting import EventKind
from stream.sla.slots import local_date, slot_start_ms
from stream.store import PartialBatch, SlotBatch, Store

log = logging.getLogger(__name__)

FIELD_OF_KIND: dict[EventKind, str] = {"request": "requests", "success": "successes"}


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
class DeadLetter:
    """A refused record (or array element), its reason and its origin, as sent to the dead-letter topic."""

    record: Record
    rejected: Rejected

    @property
    def key(self) -> str:
        """Unique per origin, so a dead letter sent twice after a crash is recognisable."""
        return f"{self.record.tp}:{self.record.offset}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "reason": self.rejected.reason,
                "topic": self.record.topic,
                "partition": self.record.partition,
                "offset": self.record.offset,
                "payload": self.rejected.payload,
            }
        )


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

    def __str__(self) -> str:
        return (
            f"{self.records:,} records: {self.counted:,} events counted, {self.duplicates:,} duplicates, "
            f"{self.late:,} late, {self.dead_letters:,} dead letters; {self.redelivered:,} redelivered batches skipped"
        )


class Ingester:
    """Applies batches of input records of one kind to the store."""

    def __init__(
        self,
        store: Store,
        tz: ZoneInfo,
        bounds: Callable[[], TimeBounds],
        send_dead_letter: Callable[[DeadLetter], Awaitable[None]],
    ) -> None:
        self._store = store
        self._tz = tz
        self._bounds = bounds
        self._send_dead_letter = send_dead_letter
        self._day_of_slot: dict[int, str] = {}
        self.stats = IngestStats()

    def _day(self, slot_ms: int) -> str:
        day = self._day_of_slot.get(slot_ms)
        if day is None:
            if len(self._day_of_slot) > 100_000:  # bounded memory: a cache, not a record
                self._day_of_slot.clear()
            day = self._day_of_slot[slot_ms] = local_date(slot_ms, self._tz).isoformat()
        return day

    async def apply(self, kind: EventKind, records: Iterable[Record]) -> None:
        """Count ``records`` (any mix of partitions, in consumption order) exactly once."""
        by_partition: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.tp].append(record)
        applied = await self._store.applied_offsets(by_partition)
        # Partitions go concurrently: one's records are parsed while Redis runs another's script.
        await asyncio.gather(
            *(self._apply_partition(kind, tp, batch, applied[tp]) for tp, batch in by_partition.items())
        )

    async def _apply_partition(self, kind: EventKind, tp: str, batch: Sequence[Record], applied: int | None) -> None:
        for _ in range(2):
            fresh = [record for record in batch if applied is None or record.offset > applied]
            if not fresh:
                self.stats.redelivered += 1
                return
            try:
                await self._apply_fresh(kind, tp, fresh)
                return
            except PartialBatch as overlap:  # another worker applied part of it since we looked
                applied = overlap.applied_offset
        raise RuntimeError(f"{tp}: batch kept overlapping applied offsets")

    async def _apply_fresh(self, kind: EventKind, tp: str, records: Sequence[Record]) -> None:
        bounds = self._bounds()
        ids_by_slot: dict[tuple[str, int], list[str]] = defaultdict(list)
        stream_ms = -1
        refused = 0
        for record in records:
            events, rejected = parse_record(record.value, kind, bounds)
            for problem in rejected:
                await self._send_dead_letter(DeadLetter(record, problem))
            refused += len(rejected)
            for event in events:
                ids_by_slot[(event.app_id, slot_start_ms(event.counted_ts, self._tz))].append(event.event_id)
                stream_ms = max(stream_ms, event.ts)
        slots = [SlotBatch(app, slot_ms, self._day(slot_ms), ids) for (app, slot_ms), ids in ids_by_slot.items()]
        result = await self._store.apply_batch(
            tp, [r.offset for r in records], slots, FIELD_OF_KIND[kind], stream_ms, refused
        )
        stats = self.stats
        stats.records += len(records)
        stats.counted += result.counted
        stats.duplicates += result.duplicates
        stats.late += result.late
        stats.dead_letters += refused
