"""What the input data covers of a month: no figure without data (docs/sla.md, "Coverage").

The agreement reads a slot without requests as available, so a month in
which nothing was read at all would read 100%. A customer who did not use
the service rightly has 100%; a mistyped app, a file of the wrong month or a
producer that stopped sending must not. So every statement says what its
data covers, measured on the whole input (every app), by event time:

* a **covered minute** is one in which at least one valid event of any app
  happened (its own ``ts``: a request's time, a success's time);
* a **silent period** is a run of at least ``silent_after_minutes`` minutes
  without a covered one, inside the span measured: the service month, or
  while it runs, its part up to the time the figures are as of. A run at the
  start or the end of that span counts too (data that begins late, or stops).

Coverage is kept as one bit a minute of each calendar month
(:class:`MinuteMap`): the live workers set the bits in Redis in the same
atomic step that counts a batch, and the offline report sets them in memory
from its files, so a live page, a replay and a report of the same events
show the same silent periods. Being event time, a backlog read late fills
the minutes it covers, and an ongoing silence is claimed only once the
figures are as of a time past it.

Example: data from 00:00 to 09:59, then nothing until 10:20, in a day's span:
    >>> start = 1_552_147_200_000  # 2019-03-10 00:00 in Shanghai
    >>> covered = MinuteMap(start, start + 24 * 60 * MINUTE_MS)
    >>> for minute in [*range(0, 600), *range(620, 24 * 60)]:
    ...     _ = covered.add(start + minute * MINUTE_MS + 1234)
    >>> day_end = start + 24 * 60 * MINUTE_MS
    >>> c = Coverage.measure(covered, start, day_end, as_of_ms=day_end, silent_after_minutes=15)
    >>> [(p.start_ms - start) // MINUTE_MS for p in c.silent], c.silent[0].minutes, c.complete, c.running
    ([600], 20, False, False)
    >>> Coverage.measure(covered, start, day_end, as_of_ms=start + 610 * MINUTE_MS, silent_after_minutes=15).complete
    True

(As of 10:10 the gap is 10 minutes old: not silent yet, and the day is running.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from stream.sla.months import calendar_month
from stream.sla.slots import local_time

MINUTE_MS = 60_000


class MinuteMap:
    """Which minutes of ``[start_ms, end_ms)`` (a calendar month) had an event: one bit a minute.

    Its bytes (:meth:`to_bytes`, and the ``bits`` it is made from) are in
    Redis's bitmap order (``SETBIT`` offset 0 is the high bit of byte 0), so
    the bitmap the live state keeps (``GET`` of it) and one built here from
    files are the same bytes, and :meth:`merge` is a bitwise OR, for maps of
    the same month read by several processes or partitions. In memory it is
    a byte a minute (ASCII ``0``/``1``, 44 kB a month), so that marking a
    minute is one store and every scan (:meth:`minutes`, silent periods) runs
    in C, not a Python loop over 44,640 bits: a report or a page of 10,000
    apps measures coverage once a statement.

    Example:
        >>> m = MinuteMap(0, 10 * MINUTE_MS)
        >>> m.add(61_000), m.add(9 * MINUTE_MS), m.add(10 * MINUTE_MS)  # the last is outside
        (True, True, False)
        >>> m.to_bytes(), list(m.minutes())
        (b'@@', [60000, 540000])
        >>> MinuteMap(0, 10 * MINUTE_MS, m.to_bytes()).marks(0, 10 * MINUTE_MS)
        b'0100000001'
    """

    def __init__(self, start_ms: int, end_ms: int, bits: bytes = b"") -> None:
        if start_ms % MINUTE_MS or end_ms % MINUTE_MS or end_ms < start_ms:
            raise ValueError(f"a minute map spans whole minutes: [{start_ms}, {end_ms})")
        self.start_ms = start_ms
        self.end_ms = end_ms
        size = (end_ms - start_ms) // MINUTE_MS
        packed = bits[: (size + 7) // 8]
        digits = format(int.from_bytes(packed, "big"), f"0{8 * len(packed)}b").encode() if packed else b""
        self._marks = bytearray(digits[:size].ljust(size, b"0"))

    def add(self, ts_ms: int) -> bool:
        """Mark covered the minute of ``ts_ms``; False (nothing marked) when it is outside the map."""
        if not self.start_ms <= ts_ms < self.end_ms:
            return False
        self._marks[(ts_ms - self.start_ms) // MINUTE_MS] = _COVERED
        return True

    def add_minutes(self, minutes: Iterable[int]) -> None:
        """Mark covered each minute given by its number since the epoch (``ts // MINUTE_MS``); those outside the
        map mark nothing."""
        marks, first, size = self._marks, self.start_ms // MINUTE_MS, len(self._marks)
        for minute in minutes:
            if 0 <= minute - first < size:
                marks[minute - first] = _COVERED

    def merge(self, other: MinuteMap) -> None:
        """Add every minute ``other`` (a map of the same span) covers."""
        if (other.start_ms, other.end_ms) != (self.start_ms, self.end_ms):
            raise ValueError("only maps of the same span merge")
        if self._marks:
            merged = int(self._marks, 2) | int(other._marks, 2)
            self._marks = bytearray(format(merged, f"0{len(self._marks)}b").encode())

    def to_bytes(self) -> bytes:
        """The bits, padded with zeros to whole bytes: Redis's bitmap of the month."""
        padded = self._marks + b"0" * (-len(self._marks) % 8)
        return int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""

    def marks(self, start_ms: int, end_ms: int) -> bytes:
        """``b"0"``/``b"1"`` for each minute of ``[start_ms, end_ms)`` (cut to the map's span): 1 is covered."""
        low = max(0, (start_ms - self.start_ms) // MINUTE_MS)
        high = min(len(self._marks), -(-(end_ms - self.start_ms) // MINUTE_MS))
        return bytes(self._marks[low:high]) if low < high else b""

    def minutes(self, start_ms: int | None = None, end_ms: int | None = None) -> Iterator[int]:
        """The start (epoch ms) of each covered minute in ``[start_ms, end_ms)`` (default: the map's span)."""
        low = self.start_ms if start_ms is None else max(start_ms, self.start_ms)
        first = (low - self.start_ms) // MINUTE_MS
        marks = self.marks(low, self.end_ms if end_ms is None else end_ms)
        at = marks.find(b"1")
        while at >= 0:
            yield self.start_ms + (first + at) * MINUTE_MS
            at = marks.find(b"1", at + 1)


_COVERED = ord("1")


def month_label(year: int, month: int) -> str:
    """``YYYY-MM``: how a calendar month's map is named (the live state's ``coverage:{tp}:{YYYY-MM}``)."""
    return f"{year:04d}-{month:02d}"


class MonthBits:
    """Where each minute's bit is: its calendar month in ``tz`` and its offset in that month's :class:`MinuteMap`.

    Example (Shanghai is UTC+8, so 2019-02-28 16:00 UTC is 1 March 00:00 there):
        >>> bits = MonthBits(ZoneInfo("Asia/Shanghai"))
        >>> first = 1_551_369_600_000 // MINUTE_MS
        >>> sorted(bits.of([first - 1, first, first + 61]))
        [('2019-02', 40319), ('2019-03', 0), ('2019-03', 61)]
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self._tz = tz
        self._months: dict[str, tuple[int, int]] = {}
        """Label → span of the months met so far (a handful: a batch spans minutes, a replay a month or two)."""

    def of(self, minutes: Iterable[int]) -> list[tuple[str, int]]:
        """``(YYYY-MM, bit)`` for each minute given by its number since the epoch (``ts // MINUTE_MS``)."""
        found = []
        for minute in minutes:
            ts_ms = minute * MINUTE_MS
            label, start_ms = self._month_of(ts_ms)
            found.append((label, (ts_ms - start_ms) // MINUTE_MS))
        return found

    def _month_of(self, ts_ms: int) -> tuple[str, int]:
        """The label and first instant of the calendar month ``ts_ms`` falls in."""
        for label, (start_ms, end_ms) in self._months.items():
            if start_ms <= ts_ms < end_ms:
                return label, start_ms
        if len(self._months) > 24:  # bounded memory: a cache, not a record
            self._months.clear()
        local = local_time(ts_ms, self._tz)
        label = month_label(local.year, local.month)
        span = self._months[label] = calendar_month(local.year, local.month).span_ms(self._tz)
        return label, span[0]


@dataclass(frozen=True)
class SilentPeriod:
    """``[start_ms, end_ms)``, whole minutes in which no event of any app was read."""

    start_ms: int
    end_ms: int

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS


@dataclass(frozen=True)
class Coverage:
    """What the data covers of one span (a service month, or its part so far)."""

    start_ms: int
    """The span's first instant (the service month's)."""
    end_ms: int
    """The instant after the span measured: the service month's end, or the minute the figures are as of."""
    month_end_ms: int
    """The instant after the service month's last."""
    as_of_ms: int
    """When the figures were taken, cut to its minute: before ``month_end_ms``, the month was still running (a
    time before the month's start measures nothing: ``end_ms`` is then the start)."""
    first_ms: int | None
    """The first covered minute's start; None: no event at all in the span."""
    last_ms: int | None
    """The instant after the last covered minute."""
    silent: tuple[SilentPeriod, ...]
    silent_after_minutes: int

    @classmethod
    def measure(
        cls,
        covered: MinuteMap,
        start_ms: int,
        month_end_ms: int,
        as_of_ms: int,
        silent_after_minutes: int,
    ) -> Coverage:
        """The coverage of ``[start_ms, month_end_ms)`` as of ``as_of_ms`` (at or past ``month_end_ms``: all of it).

        ``as_of_ms`` is cut to its minute: the minute it falls in is not measured yet.
        """
        if not covered.start_ms <= start_ms <= month_end_ms <= covered.end_ms or start_ms % MINUTE_MS:
            raise ValueError("coverage is measured on whole minutes inside the map's span")
        as_of = _minute(as_of_ms)
        end_ms = max(start_ms, min(month_end_ms, as_of))
        marks = covered.marks(start_ms, end_ms)
        first, last = marks.find(b"1"), marks.rfind(b"1")
        at_least = max(1, silent_after_minutes)
        silent = tuple(
            SilentPeriod(start_ms + run.start() * MINUTE_MS, start_ms + run.end() * MINUTE_MS)
            for run in re.finditer(b"0{%d,}" % at_least, marks)
        )
        return cls(
            start_ms,
            end_ms,
            month_end_ms,
            as_of,
            None if first < 0 else start_ms + first * MINUTE_MS,
            None if last < 0 else start_ms + (last + 1) * MINUTE_MS,
            silent,
            silent_after_minutes,
        )

    @property
    def running(self) -> bool:
        """Whether the month was still running when the figures were taken ("so far")."""
        return self.as_of_ms < self.month_end_ms

    @property
    def complete(self) -> bool:
        """The data covers the whole span measured: some event in it, and no silent period."""
        return self.has_data and not self.silent

    @property
    def has_data(self) -> bool:
        return self.first_ms is not None

    @property
    def silent_minutes(self) -> int:
        return sum(p.minutes for p in self.silent)


def _minute(ts_ms: int) -> int:
    return ts_ms - ts_ms % MINUTE_MS
