"""Where this worker's reading of each input partition stands against Redis: the position is Redis's.

Kafka's committed offsets run ahead of Redis when Redis loses its last
writes, so they are never trusted (docs/design.md, invariant 1).
A partition is counted only after this worker positioned its consumer at
Redis's applied offset + 1 (:meth:`Cursors.sought`; the least of the shards'),
and each batch is applied with the applied offset its reading continues from
in each shard, which the store checks (:meth:`stream.live.store.Store.apply_steps`):
no gap, no double count.

After a seek *back* (Redis lost writes, a rebuild), records fetched beyond
the new position may still be handed over before the re-read ones (the
rest of a recount's fetch, handed over in steps). They are dropped until a record at or below
the highest offset delivered before the seek arrives: from then on, the
records are the re-read ones, in order.

Example:
    >>> cursors = Cursors()
    >>> cursors.sought("requests:0", applied=[9])
    >>> [r for r in cursors.admit("requests:0", [10, 11, 12])]
    [10, 11, 12]
    >>> cursors.sought("requests:0", applied=[10])  # Redis lost the batch 11-12: read again from 11
    >>> cursors.admit("requests:0", [13, 14]), cursors.admit("requests:0", [11, 12, 13])
    ([], [11, 12, 13])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound="HasOffset | int")


def _offset(record: HasOffset | int) -> int:
    return record if isinstance(record, int) else record.offset


@dataclass
class PartitionCursor:
    """One partition's reading: the applied offsets it continues from, and what was delivered since the last seek."""

    shards: list[int]
    """Each shard's applied offset (-1: none) when the consumer was positioned, or the last one applied there."""
    delivered: int = -1
    """The highest offset handed to the ingester (kept across seeks)."""
    skip_above: int | None = None
    """After a seek back: records above this offset are stale fetches, dropped until one at or below it arrives."""
    generation: int | None = None
    """The live state's generation the position was read in (None: the one in force when first used). A new
    generation (a rebuild, Redis losing writes) makes every position stale: the partition is positioned again."""

    @property
    def applied(self) -> int:
        """Where every shard has applied the partition up to (-1: nowhere yet)."""
        return min(self.shards)


class Cursors:
    """The cursors of the input partitions this worker has positioned, by ``topic:partition``."""

    def __init__(self) -> None:
        self._cursors: dict[str, PartitionCursor] = {}
        self._delivered: dict[str, int] = {}

    def get(self, tp: str) -> PartitionCursor | None:
        """The partition's cursor; None when this worker has not positioned the partition since it was assigned."""
        return self._cursors.get(tp)

    def sought(self, tp: str, applied: Sequence[int]) -> None:
        """The consumer was positioned after the least of ``applied``, each shard's applied offset (-1 for none).

        A new cursor each time: a step that began before the seek holds the old
        one, and must not move the new one when it ends.
        """
        delivered = self._delivered.get(tp, -1)
        least = min(applied)
        self._cursors[tp] = PartitionCursor(
            shards=list(applied), delivered=delivered, skip_above=delivered if delivered > least else None
        )

    def forget(self, tps: Iterable[str]) -> None:
        """These partitions were revoked or sought elsewhere by Faust: they must be positioned again before counting."""
        for tp in tps:
            cursor = self._cursors.pop(tp, None)
            if cursor is not None:
                self._delivered[tp] = max(self._delivered.get(tp, -1), cursor.delivered)

    def saw(self, tp: str, records: Sequence[R]) -> None:
        """Records of a partition that is not positioned yet went by (dropped): remember how far they reached."""
        if records:
            self._delivered[tp] = max(self._delivered.get(tp, -1), max(_offset(r) for r in records))

    def admit(self, tp: str, records: Sequence[R]) -> list[R]:
        """The records (in offset order) of a positioned partition that continue its reading.

        Stale fetches after a seek back are dropped.
        """
        cursor = self._cursors[tp]
        if cursor.skip_above is None and records:  # the usual case: all of them, no check per record
            cursor.delivered = max(cursor.delivered, _offset(records[-1]))
            self._delivered[tp] = cursor.delivered
            return list(records)
        admitted: list[R] = []
        for record in records:
            offset = _offset(record)
            if cursor.skip_above is not None:
                if offset > cursor.skip_above:
                    continue
                cursor.skip_above = None
            admitted.append(record)
            cursor.delivered = max(cursor.delivered, offset)
            self._delivered[tp] = cursor.delivered
        return admitted
