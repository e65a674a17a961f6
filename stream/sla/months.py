"""Service months: the periods availability is computed over (docs/sla.md §3).

A subscription of N months from an activation date covers the calendar months
it touches, cut at its ends; an app with no subscription on record is measured
in whole calendar months.

Example:
    >>> from datetime import date
    >>> [str(m) for m in Subscription(date(2019, 3, 17), 3).service_months()]
    ['2019-03-17..2019-03-31', '2019-04-01..2019-04-30', '2019-05-01..2019-05-31', '2019-06-01..2019-06-16']
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from stream.sla.slots import day_span_ms

MINUTES_PER_DAY = 24 * 60


def _last_day_of_month(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


@dataclass(frozen=True, order=True)
class ServiceMonth:
    """The local days ``first_day`` to ``last_day``, inclusive, inside one calendar month."""

    first_day: date
    last_day: date

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(f"service month ends ({self.last_day}) before it starts ({self.first_day})")
        if (self.first_day.year, self.first_day.month) != (self.last_day.year, self.last_day.month):
            raise ValueError(f"service month {self} crosses a calendar month")

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def total_minutes(self) -> int:
        """Days × 24 × 60: the denominator of availability (15 days → 21,600)."""
        return self.days * MINUTES_PER_DAY

    def span_ms(self, tz: ZoneInfo) -> tuple[int, int]:
        """``[start, end)`` in epoch ms: local midnight of the first day to that after the last."""
        return day_span_ms(self.first_day, self.last_day, tz)

    def __str__(self) -> str:
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}"


def calendar_month(year: int, month: int) -> ServiceMonth:
    """The whole calendar month, for an app with no subscription on record."""
    return ServiceMonth(date(year, month, 1), _last_day_of_month(year, month))


@dataclass(frozen=True, order=True)
class Subscription:
    """A purchase of ``months`` months of service from ``activation``."""

    activation: date
    months: int

    def __post_init__(self) -> None:
        if self.months < 1:
            raise ValueError(f"a subscription lasts at least one month, got {self.months}")

    @property
    def last_day(self) -> date:
        """The day before the same date ``months`` later.

        When that date does not exist (31 January + 1 month), the subscription
        runs to the end of the shorter month rather than losing its last days:
        31 January + 1 month ends on the last day of February.
        """
        year, month = _add_months(self.activation.year, self.activation.month, self.months)
        month_end = _last_day_of_month(year, month)
        if self.activation.day > month_end.day:
            return month_end
        return date(year, month, self.activation.day) - timedelta(days=1)

    def service_months(self) -> list[ServiceMonth]:
        """The subscription cut at calendar month boundaries, first to last."""
        months: list[ServiceMonth] = []
        first = self.activation
        last_day = self.last_day
        while first <= last_day:
            cut = min(_last_day_of_month(first.year, first.month), last_day)
            months.append(ServiceMonth(first, cut))
            first = cut + timedelta(days=1)
        return months

    def overlaps(self, other: Subscription) -> bool:
        return self.activation <= other.last_day and other.activation <= self.last_day


def service_months_in(year: int, month: int, subscriptions: Sequence[Subscription]) -> list[ServiceMonth]:
    """The service months that fall in one calendar month, sorted by start.

    With no subscription on record this is the whole calendar month; with
    subscriptions it is every piece of them inside the month (a renewal can
    put two in one month), and nothing for days no subscription covers.
    """
    if not subscriptions:
        return [calendar_month(year, month)]
    return sorted(
        piece
        for subscription in subscriptions
        for piece in subscription.service_months()
        if (piece.first_day.year, piece.first_day.month) == (year, month)
    )


def begun_by(months: Sequence[ServiceMonth], tz: ZoneInfo, ts_ms: int) -> list[ServiceMonth]:
    """The service months of ``months`` that had begun at ``ts_ms``: one not begun has no figure yet, not a clean one.

    Example (a subscription from the 20th, seen on the 7th and on the 20th):
        >>> shanghai = ZoneInfo("Asia/Shanghai")
        >>> months = service_months_in(2026, 12, [Subscription(date(2026, 12, 20), 1)])
        >>> begun_by(months, shanghai, 1_796_572_800_000), len(begun_by(months, shanghai, 1_797_696_000_000))
        ([], 1)
    """
    return [month for month in months if month.span_ms(tz)[0] <= ts_ms]


def service_month_on(day: date, subscriptions: Sequence[Subscription]) -> ServiceMonth | None:
    """The service month ``day`` falls in; None when no subscription covers it.

    Example:
        >>> str(service_month_on(date(2019, 3, 20), [Subscription(date(2019, 3, 17), 1)]))
        '2019-03-17..2019-03-31'
        >>> service_month_on(date(2019, 3, 10), [Subscription(date(2019, 3, 17), 1)]) is None
        True
    """
    months = service_months_in(day.year, day.month, subscriptions)
    return next((m for m in months if m.first_day <= day <= m.last_day), None)


def check_no_overlap(subscriptions: Sequence[Subscription]) -> None:
    """Refuse subscriptions of one app that cover a day twice (that day would be measured twice)."""
    ordered = sorted(subscriptions)
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        if earlier.overlaps(later):
            raise ValueError(
                f"subscriptions from {earlier.activation} ({earlier.months} months) and "
                f"from {later.activation} ({later.months} months) overlap"
            )
