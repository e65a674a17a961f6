"""Aligned 5-minute slots on the clock of the SLA's time zone (docs/sla.md §2).

A slot is identified by the epoch milliseconds of its start. Slots are aligned
to the local clock, so in a zone with a whole number of quarter hours of
offset they fall on the same instants as in UTC, but the day and month they
belong to are local: 2019-03-31T16:00Z opens 1 April in Shanghai.

Example:
    >>> from zoneinfo import ZoneInfo
    >>> shanghai = ZoneInfo("Asia/Shanghai")
    >>> slot_start_ms(1552183499999, shanghai)  # 2019-03-10 10:04:59.999 +08:00
    1552183200000
    >>> local_time(1552183200000, shanghai).isoformat()
    '2019-03-10T10:00:00+08:00'
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from stream.sla.policy import SLOT_MINUTES

SLOT_MS = SLOT_MINUTES * 60 * 1000
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES  # 288
_QUARTER_HOUR_MS = 15 * 60 * 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@lru_cache(maxsize=4096)
def _offset_ms(tz: ZoneInfo, quarter_hour: int) -> int:
    """UTC offset of ``tz`` during one quarter hour of epoch time.

    Offsets and their changes fall on quarter hours in every zone in use, so
    caching per quarter hour keeps the hot path to one dict lookup per event.
    """
    offset = local_time(quarter_hour * _QUARTER_HOUR_MS, tz).utcoffset()
    assert offset is not None
    return int(offset.total_seconds() * 1000)


def slot_start_ms(ts_ms: int, tz: ZoneInfo) -> int:
    """Start of the slot that holds ``ts_ms``, in epoch milliseconds."""
    local_ms = ts_ms + _offset_ms(tz, ts_ms // _QUARTER_HOUR_MS)
    return ts_ms - local_ms % SLOT_MS


def slot_end_ms(slot_ms: int) -> int:
    """Exclusive end of the slot starting at ``slot_ms``: the next slot's start."""
    return slot_ms + SLOT_MS


def local_time(ts_ms: int, tz: ZoneInfo) -> datetime:
    """The timezone-aware local time of an epoch-millisecond instant, exact to the millisecond."""
    return (_EPOCH + timedelta(milliseconds=ts_ms)).astimezone(tz)


def to_epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (sub-millisecond part dropped); naive times are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no time zone")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def instant_ms(moment: datetime | str, tz: ZoneInfo | None = None) -> int:
    """Epoch ms of a time given by hand (ISO 8601 text or a datetime); one without an offset is read on ``tz``.

    With ``tz`` None a time without an offset is refused: where the reader
    cannot know the writer's clock (the exemptions topic), the offset is
    required. Raises ``ValueError`` naming what is wrong.

    Example:
        >>> from zoneinfo import ZoneInfo
        >>> instant_ms("2019-03-10T10:00:00+08:00"), instant_ms("2019-03-10T10:00", ZoneInfo("Asia/Shanghai"))
        (1552183200000, 1552183200000)
        >>> instant_ms("2019-03-10T10:00")
        Traceback (most recent call last):
        ValueError: time 2019-03-10T10:00:00 has no time zone
    """
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            raise ValueError(f"{moment!r} is not an ISO 8601 date or time") from None
    if tz is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return to_epoch_ms(moment)


def local_date(ts_ms: int, tz: ZoneInfo) -> date:
    """The calendar day, in the SLA's zone, that an instant falls on."""
    return local_time(ts_ms, tz).date()


def day_start_ms(day: date, tz: ZoneInfo) -> int:
    """Epoch milliseconds of local midnight opening ``day``."""
    return to_epoch_ms(datetime.combine(day, time(0), tz))


@lru_cache(maxsize=4096)
def day_span_ms(first_day: date, last_day: date, tz: ZoneInfo) -> tuple[int, int]:
    """``[start, end)`` in epoch ms of the local days ``first_day`` to ``last_day`` inclusive.

    Cached: a slot boundary assesses a month for each of 10,000 apps, most of them the same calendar month.
    """
    return day_start_ms(first_day, tz), day_start_ms(last_day + timedelta(days=1), tz)


def slots_between(start_ms: int, end_ms: int, tz: ZoneInfo) -> Iterator[int]:
    """Every slot start in ``[start_ms, end_ms)``, starting with the slot that holds ``start_ms``."""
    slot = slot_start_ms(start_ms, tz)
    while slot < end_ms:
        yield slot
        slot += SLOT_MS
