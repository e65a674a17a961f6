"""Counting room-entry events into slots (docs/sla.md §1).

Each request counts once however often it is delivered (duplicates carry the
same ``event_id``), and a success counts in the slot of its request's time,
falling back to its own time when the request time is missing. Every
counter places events with :func:`counted_time`. :class:`SlotTally` is the
rule in its plainest form, in memory: the live stream (distinct-id sets in
Redis) and the offline report (:mod:`stream.offline`, spilling to disk for
months of any size) must count exactly as it does, which
``tests/component/test_counting_live_vs_offline.py`` checks on random event sets.

Example (a request at 10:04:59.9 that succeeds at 10:05:00.3 stays in the 10:00 slot):
    >>> from zoneinfo import ZoneInfo
    >>> tally = SlotTally(ZoneInfo("Asia/Shanghai"))
    >>> tally.add("request", "app", "r-1", counted_time(1552183499900, None))
    True
    >>> tally.add("success", "app", "s-1", counted_time(1552183500300, 1552183499900))
    True
    >>> tally.add("request", "app", "r-1", 1552183499900)  # delivered twice: counted once
    False
    >>> tally.counts("app")
    {1552183200000: SlotCounts(requests=1, successes=1)}
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal
from zoneinfo import ZoneInfo

from stream.sla.slots import slot_start_ms
from stream.sla.verdict import SlotCounts

EventKind = Literal["request", "success"]


def counted_time(ts: int, request_ts: int | None) -> int:
    """The time that decides an event's slot: the request's time when it is known."""
    return ts if request_ts is None else request_ts


class SlotTally:
    """Distinct requests and successes per app and slot, held in memory.

    Memory grows with the distinct events kept (some 190 bytes an event), so
    it serves tests and small sets as the reference count; ``window_ms``
    keeps only the slots a caller will report on.
    """

    def __init__(self, tz: ZoneInfo, window_ms: tuple[int, int] | None = None) -> None:
        self._tz = tz
        self._window = window_ms
        self._seen: dict[str, dict[tuple[int, EventKind], set[str]]] = defaultdict(lambda: defaultdict(set))
        self.duplicates = 0
        self.outside_window = 0

    def add(self, kind: EventKind, app_id: str, event_id: str, counted_ts: int) -> bool:
        """Count one event at ``counted_ts``; False when it was a duplicate or outside the window."""
        slot_ms = slot_start_ms(counted_ts, self._tz)
        if self._window is not None and not self._window[0] <= slot_ms < self._window[1]:
            self.outside_window += 1
            return False
        seen = self._seen[app_id][(slot_ms, kind)]
        if event_id in seen:
            self.duplicates += 1
            return False
        seen.add(event_id)
        return True

    def apps(self) -> set[str]:
        return set(self._seen)

    def counts(self, app_id: str) -> dict[int, SlotCounts]:
        """The app's counts per slot start, for the slots that saw any event."""
        requests: dict[int, int] = defaultdict(int)
        successes: dict[int, int] = defaultdict(int)
        for (slot_ms, kind), ids in self._seen.get(app_id, {}).items():
            (requests if kind == "request" else successes)[slot_ms] += len(ids)
        return {
            slot_ms: SlotCounts(requests=requests[slot_ms], successes=successes[slot_ms])
            for slot_ms in sorted(requests.keys() | successes.keys())
        }
