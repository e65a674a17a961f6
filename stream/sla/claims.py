"""When a customer may claim compensation for a service month (docs/sla.md §6).

A claim opens the day after the 5th working day of the calendar month that
follows the service month's end, and closes on the 60th natural day after it.
Working days follow the mainland-China calendar with its make-up working days
on weekends, taken from the maintained ``chinese_calendar`` package. For a
year that package does not cover yet, the official list may be supplied by
the user; without it the window is computed on weekdays and marked estimated.

Example (September 2019: Saturday 12 October is a make-up working day):
    >>> from stream.sla.months import calendar_month
    >>> window = claim_window(calendar_month(2019, 9), WorkingDayCalendar())
    >>> window.opens.isoformat(), window.closes.isoformat(), window.estimated
    ('2019-10-13', '2019-11-29', False)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import chinese_calendar

from stream.sla.months import ServiceMonth
from stream.sla.policy import SlaPolicy

_DEFAULT_POLICY = SlaPolicy()


@dataclass(frozen=True)
class OfficialYear:
    """One year's official days off and make-up working days, supplied by the user."""

    year: int
    holidays: frozenset[date]
    """Days off, including those that fall on weekdays."""
    makeup_workdays: frozenset[date]
    """Weekend days that are working days."""

    def __post_init__(self) -> None:
        stray = sorted(d for d in self.holidays | self.makeup_workdays if d.year != self.year)
        if stray:
            raise ValueError(f"calendar for {self.year} lists days of another year: {stray[0]}")
        both = sorted(self.holidays & self.makeup_workdays)
        if both:
            raise ValueError(f"calendar for {self.year} lists {both[0]} both as holiday and as working day")


class WorkingDayCalendar:
    """Answers whether a day is a mainland-China working day, and whether that is known or estimated."""

    def __init__(self, official_years: Iterable[OfficialYear] = ()) -> None:
        self._supplied = {year.year: year for year in official_years}
        self._answered: dict[date, tuple[bool, bool]] = {}
        """Days already answered: ``chinese_calendar`` checks each day against its whole table (some 70 µs), and
        a slot boundary of 10,000 apps asks about the same days for each of their months."""

    def is_working_day(self, day: date) -> tuple[bool, bool]:
        """``(working, estimated)``: estimated when no official calendar covers the day's year."""
        answer = self._answered.get(day)
        if answer is None:
            answer = self._answered[day] = self._look_up(day)
        return answer

    def _look_up(self, day: date) -> tuple[bool, bool]:
        supplied = self._supplied.get(day.year)
        if supplied is not None:
            if day in supplied.makeup_workdays:
                return True, False
            return day.weekday() < 5 and day not in supplied.holidays, False
        try:
            return chinese_calendar.is_workday(day), False
        except NotImplementedError:
            return day.weekday() < 5, True


@dataclass(frozen=True)
class ClaimWindow:
    """The first and last day (inclusive) a claim for a service month may be filed."""

    opens: date
    closes: date
    estimated: bool
    """True when the opening day rests on weekdays because the year's holidays are not known yet."""


@lru_cache(maxsize=4096)
def claim_window(month: ServiceMonth, calendar: WorkingDayCalendar, policy: SlaPolicy = _DEFAULT_POLICY) -> ClaimWindow:
    """The claim window of ``month``: opens after the Nth working day of the next calendar month.

    Cached (the same for every app's month): a calendar is never changed once made.
    """
    day = date(month.last_day.year, month.last_day.month, 1)
    day = (day + timedelta(days=32)).replace(day=1)
    working_days_seen = 0
    estimated = False
    while True:
        working, guessed = calendar.is_working_day(day)
        estimated = estimated or guessed
        if working:
            working_days_seen += 1
            if working_days_seen == policy.claim_after_working_days:
                break
        day += timedelta(days=1)
    closes = month.last_day + timedelta(days=policy.claim_window_days)
    return ClaimWindow(opens=day + timedelta(days=1), closes=closes, estimated=estimated)
