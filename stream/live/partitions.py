"""This worker's input partitions as its Kafka consumer holds them: positioned from Redis, reported idle.

Two jobs that need the consumer and Redis together, kept out of the Faust
wiring so they read as plain code:

* **Positioning** (:meth:`InputPartitions.position_assigned`,
  :meth:`InputPartitions.reseek`): after each rebalance Faust seeks every
  partition to Kafka's committed offset; the input partitions are sought
  again to Redis's applied offset + 1 before anything of them is counted
  (:mod:`stream.live.cursors` says why Kafka's offsets are never trusted).
  One left without a position (its fetched batch dropped across a
  rebalance, Redis away at the assignment) is positioned by the next idle
  report.
* **Idleness** (:meth:`InputPartitions.report_idle`): which assigned input
  partitions are caught up and quiet, by the rule of
  :class:`stream.live.clock.IdleTracker`, written to Redis for the closer.

The consumer is anything with aiokafka's (Faust's) ``assignment``,
``seek_wait``, ``earliest_offsets``, ``highwaters``, ``position`` and ``_commit``
coroutines, looked up on each call (Faust creates it after the app).

And **committing** (:meth:`InputPartitions.commit_applied`): Redis's
positions are committed to the consumer group, so that tools watching the
group's lag see the worker's progress, and a worker finding Redis empty sees
that counting was done before (:func:`stream.live.worker.earlier_progress`).
They are never used as positions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from faust.types import TP

from stream.live.clock import IdleTracker, PartitionProgress
from stream.live.cursors import Cursors
from stream.live.store import Applied, Store

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """The parts of Faust's consumer this module uses."""

    def assignment(self) -> set[TP]: ...

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None: ...

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def position(self, tp: TP) -> int | None: ...

    async def _commit(self, offsets: Mapping[TP, int]) -> bool: ...


def tp_name(topic: str, partition: int) -> str:
    """``topic:partition``: how Redis and the cursors name a partition."""
    return f"{topic}:{partition}"


class InputPartitions:
    """The input partitions (``topic`` → partition count) of one worker's consumer."""

    def __init__(
        self,
        consumer: Callable[[], Consumer],
        store: Store,
        cursors: Cursors,
        counts: Mapping[str, int],
        idle: IdleTracker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._cursors = cursors
        self._counts = dict(counts)
        self._idle = idle
        self._clock = clock
        self._committed: dict[str, int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        """Records between the consumer's position and the last stable offset, per assigned input partition,
        as of the last idle report."""

    @property
    def names(self) -> list[str]:
        """Every input partition of the job (not only this worker's), as ``topic:partition``."""
        return [tp_name(topic, p) for topic, count in self._counts.items() for p in range(count)]

    def _assigned(self) -> dict[str, Any]:
        return {tp_name(tp.topic, tp.partition): tp for tp in self._consumer().assignment() if tp.topic in self._counts}

    async def reseek(self, name: str, applied: Applied) -> None:
        """Position this worker's consumer of ``name`` right after where every shard applied it (-1: none)."""
        consumer = self._consumer()
        topic, _, partition = name.rpartition(":")
        tp = TP(topic, int(partition))
        if tp not in consumer.assignment():
            self._cursors.forget([name])  # revoked meanwhile: whoever has it now positions it
            return
        offset = applied.least + 1 if applied.least >= 0 else (await consumer.earliest_offsets(tp))[tp]
        await consumer.seek_wait({tp: offset})  # in the consumer's own thread: a plain seek races its fetcher
        self._cursors.sought(name, applied.shards)
        log.info("%s: reading from offset %d (Redis's applied offset + 1)", name, offset)

    async def position_assigned(self) -> None:
        """Faust has just sought its partitions to Kafka's committed offsets: seek the input ones to Redis's.

        One attempt: if Redis does not answer now, each partition is
        positioned on its first batch, or by the next idle report, instead.
        """
        await self._position(self._assigned(), "at assignment")

    async def position_unpositioned(self) -> None:
        """Position the assigned input partitions that have no position (a batch dropped across a rebalance).

        Without this, a quiet partition whose fetched records were dropped
        would wait for its next record to be positioned: its stream time, and
        with it the watermark of every app, would stand still until then.
        """
        await self._position(
            {name: tp for name, tp in self._assigned().items() if self._cursors.get(name) is None}, "unpositioned"
        )

    async def _position(self, partitions: dict[str, Any], why: str) -> None:
        if not partitions:
            return
        consumer = self._consumer()
        try:
            applied = await self._store.applied_offsets(partitions)
            unknown = [tp for name, tp in partitions.items() if applied[name].least < 0]
            earliest = await consumer.earliest_offsets(*unknown) if unknown else {}
            await consumer.seek_wait(
                {
                    tp: earliest[tp] if applied[name].least < 0 else applied[name].least + 1
                    for name, tp in partitions.items()
                }
            )
        except Exception as error:  # noqa: BLE001 - Redis away, or a rebalance moved them: positioned later
            log.info("input partitions not positioned %s (%s); each is on its first batch", why, error)
            self._cursors.forget(partitions)
            return
        for name in partitions:
            self._cursors.sought(name, applied[name].shards)
        log.info("input partitions read from Redis's positions (%s): %s", why, ", ".join(sorted(partitions)))

    def dropped(self, tps: Iterable[TP]) -> None:
        """Fetched batches of ``tps`` were not counted (a rebalance): each must be positioned again first."""
        self._cursors.forget(tp_name(tp.topic, tp.partition) for tp in tps)

    async def commit_applied(self) -> None:
        """Commit the offset after Redis's applied one, for each assigned input partition whose position moved."""
        offsets = {}
        for name, tp in self._assigned().items():
            cursor = self._cursors.get(name)
            if cursor is not None and cursor.applied >= 0 and self._committed.get(name) != cursor.applied + 1:
                offsets[name] = (tp, cursor.applied + 1)
        if offsets and await self._consumer()._commit({tp: offset for tp, offset in offsets.values()}):
            self._committed.update({name: offset for name, (_, offset) in offsets.items()})

    def forget_positions(self) -> None:
        """Faust sought every partition to Kafka's committed offset: each must be positioned from Redis again."""
        self._cursors.forget(self.names)

    async def report_idle(self) -> None:
        """Write which of this worker's input partitions are idle (with the wall time seen) and which are busy.

        Partitions left without a position are positioned first (:meth:`position_unpositioned`).
        """
        await self.position_unpositioned()
        assigned = self._assigned()
        if not assigned:
            return
        consumer = self._consumer()
        ends = await consumer.highwaters(*assigned.values())
        positions = {name: await consumer.position(tp) for name, tp in assigned.items()}
        applied = await self._store.applied_offsets(assigned)
        progress = {}
        for name, tp in assigned.items():
            cursor = self._cursors.get(name)
            progress[name] = PartitionProgress(
                applied=applied[name].least if applied[name].least >= 0 else None,
                delivered=None if cursor is None else cursor.delivered,
                position=positions[name],
                stable_end=ends.get(tp),
            )
        self.lag = {
            (tp.topic, tp.partition): max(0, ends[tp] - positions[name])
            for name, tp in assigned.items()
            if ends.get(tp) is not None and positions[name] is not None
        }
        idle, busy = self._idle.report(progress, int(self._clock() * 1000))
        await self._store.mark_idle(idle, busy)
