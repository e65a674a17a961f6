"""The job's clock: partition stream time, idleness, the watermark and when a slot is due (docs/design.md, event time).

Every rule of event time lives here, with its timing built once from the
settings (:meth:`ClockTiming.of`), so the worker that reports idleness, the
closer that reads it and the tests that wait for it cannot disagree.

* A partition's **stream time** is the largest event time applied from it
  (Redis records it with the batch, :class:`PartitionState`).
* A partition is **idle** when it is caught up (nothing delivered beyond what
  Redis applied, the consumer at the last stable offset) and Redis's applied
  offset has not moved for ``idle_after_ms``; its owner reports it every
  ``report_interval_s`` (:class:`IdleTracker`).
* The **watermark** is the smallest partition time: a lagging partition (a
  backlog, a dead worker) holds every slot open, so a backlog never closes a
  slot early. An idle partition would hold it forever, so while its report is
  fresh (``idle_fresh_ms``) wall-clock time moves it on, to ``now - idle_lag``:
  the oldest time an event produced now could still carry.
* A slot is **due** once ``slot end + grace <= watermark`` (:func:`is_due`).

Example:
    >>> busy = PartitionState(offset=10, stream_ms=1_000, idle_seen_ms=None)
    >>> quiet = PartitionState(offset=None, stream_ms=None, idle_seen_ms=99_000)
    >>> timing = ClockTiming(grace_ms=0, idle_lag_ms=10_000)
    >>> timing.watermark({"r:0": busy, "r:1": quiet}, now_ms=100_000)
    1000
    >>> timing.watermark({"r:1": quiet}, now_ms=100_000)
    90000
    >>> is_due(slot_ms=0, watermark_ms=300_000, grace_ms=0), is_due(slot_ms=0, watermark_ms=299_999, grace_ms=0)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stream.config import Settings
from stream.sla.slots import SLOT_MS


@dataclass(frozen=True)
class PartitionState:
    """What Redis knows of one input partition: last applied offset, stream time, when last reported idle."""

    offset: int | None
    stream_ms: int | None
    idle_seen_ms: int | None


@dataclass(frozen=True)
class ClockTiming:
    """How the job reads time; all in milliseconds but the report interval."""

    grace_ms: int
    idle_lag_ms: int = 10_000
    """How far behind the wall clock an idle partition's stream time is put (``[stream] idle_lag_seconds``)."""
    idle_after_ms: int = 2_000
    """A caught-up partition whose applied offset has not moved for this long is idle."""
    idle_fresh_ms: int = 5_000
    """An idle report older than this is not trusted (its worker may be gone): several report intervals."""
    report_interval_s: float = 1.0
    """How often a worker reports its partitions idle or busy, and the closer ticks."""

    @classmethod
    def of(cls, settings: Settings) -> ClockTiming:
        """The timing the settings give (``[stream]``)."""
        return cls(grace_ms=settings.grace_ms, idle_lag_ms=settings.idle_lag_ms)

    def partition_time(self, state: PartitionState, now_ms: int) -> int | None:
        """A partition's stream time, moved on by the wall clock while it is reported idle; None if unknown."""
        event_time = state.stream_ms
        if state.idle_seen_ms is not None and now_ms - state.idle_seen_ms <= self.idle_fresh_ms:
            wall_time = now_ms - self.idle_lag_ms
            return wall_time if event_time is None else max(event_time, wall_time)
        return event_time

    def watermark(self, states: Mapping[str, PartitionState], now_ms: int) -> int | None:
        """The smallest partition time; None while any partition's time is unknown (nothing may close)."""
        times = [self.partition_time(state, now_ms) for state in states.values()]
        if not times or any(t is None for t in times):
            return None
        return min(t for t in times if t is not None)

    def due_before(self, watermark_ms: int) -> int:
        """Slots starting before this are due at ``watermark_ms`` (see :func:`is_due`)."""
        return watermark_ms - self.grace_ms - SLOT_MS + 1


def is_due(slot_ms: int, watermark_ms: int, grace_ms: int) -> bool:
    """Whether the slot starting at ``slot_ms`` may close: its end plus the grace period is at or before the watermark.

    The closer asks the store for these with :meth:`ClockTiming.due_before`; tests use this form.
    """
    return slot_ms + SLOT_MS + grace_ms <= watermark_ms


@dataclass(frozen=True)
class PartitionProgress:
    """One assigned input partition as its worker sees it at a report."""

    applied: int | None
    """Redis's applied offset (None: nothing applied yet)."""
    delivered: int | None
    """The last offset handed to the ingester since the partition was positioned (None: not positioned)."""
    position: int | None
    """The consumer's next fetch offset."""
    stable_end: int | None
    """The partition's last stable offset (its end under read_committed)."""


@dataclass
class IdleTracker:
    """Which of a worker's input partitions are idle, from one report to the next.

    Caught up is the consumer's position at the last stable offset with
    nothing handed to the ingester beyond Redis's applied offset. Not
    "applied offset + 1 >= end": a partition's last offsets may be
    transaction markers or other offsets no record is ever delivered for.

    Example:
        >>> tracker = IdleTracker(ClockTiming(grace_ms=0))
        >>> caught_up = PartitionProgress(applied=9, delivered=9, position=11, stable_end=11)
        >>> tracker.report({"r:0": caught_up}, now_ms=60_000)
        ({'r:0': 60000}, [])
        >>> tracker.report({"r:0": PartitionProgress(10, 10, 11, 12)}, now_ms=61_000)
        ({}, ['r:0'])
        >>> tracker.report({"r:0": PartitionProgress(10, 10, 12, 12)}, now_ms=62_000)
        ({}, ['r:0'])
        >>> tracker.report({"r:0": PartitionProgress(10, 10, 12, 12)}, now_ms=63_000)
        ({'r:0': 63000}, [])
    """

    timing: ClockTiming
    _since: dict[str, tuple[int | None, int]] = field(default_factory=dict)
    """Per partition: the applied offset last seen, and the wall ms it was first seen at."""

    def report(self, partitions: Mapping[str, PartitionProgress], now_ms: int) -> tuple[dict[str, int], list[str]]:
        """``(idle, busy)``: idle partitions with the wall ms they were seen idle at, and the busy ones."""
        idle: dict[str, int] = {}
        busy: list[str] = []
        for name, seen in partitions.items():
            # First seen: idle at once if caught up (a restarted worker need not wait out idle_after again).
            last_applied, since = self._since.get(name, (seen.applied, 0))
            if seen.applied != last_applied:
                since = now_ms
            self._since[name] = (seen.applied, since)
            all_applied = seen.delivered is not None and seen.delivered <= (
                -1 if seen.applied is None else seen.applied
            )
            at_end = seen.stable_end is not None and seen.position is not None and seen.position >= seen.stable_end
            if all_applied and at_end and now_ms - since >= self.timing.idle_after_ms:
                idle[name] = now_ms
            else:
                busy.append(name)
        return idle, busy
