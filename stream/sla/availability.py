"""Monthly availability and the error budget (docs/sla.md §4).

Availability is an exact ``Fraction``; it is only ever shown truncated, so a
month at 99.8992% reads 99.89%, never a rounded-up 99.90%.

Example (the agreement's worked example: March 2019, six bad slots):
    >>> from stream.sla.months import calendar_month
    >>> march = calendar_month(2019, 3)
    >>> display_percent(availability(march, unavailable_slots=6))
    '99.93%'
    >>> error_budget(march, unavailable_slots=6)
    ErrorBudget(slots_allowed=8, slots_used=6, slots_left=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from stream.sla.months import ServiceMonth
from stream.sla.policy import SLOT_MINUTES, SlaPolicy

_DEFAULT_POLICY = SlaPolicy()


def unavailable_minutes(unavailable_slots: int) -> int:
    """Only whole flagged slots count: each is 5 minutes, never a fraction of one."""
    return unavailable_slots * SLOT_MINUTES


def availability(month: ServiceMonth, unavailable_slots: int) -> Fraction:
    """``1 − unavailable minutes / total minutes`` of one service month, exactly."""
    if not 0 <= unavailable_slots <= month.total_minutes // SLOT_MINUTES:
        raise ValueError(f"{unavailable_slots} unavailable slots do not fit in service month {month}")
    return 1 - Fraction(unavailable_minutes(unavailable_slots), month.total_minutes)


def meets_target(value: Fraction, policy: SlaPolicy = _DEFAULT_POLICY) -> bool:
    """Whether availability keeps the commitment (≥ 99.9% by default), compared exactly."""
    return value >= policy.availability_target


def display_percent(value: Fraction, decimals: int = 2) -> str:
    """A fraction as a percentage truncated (never rounded up) to ``decimals`` places."""
    return truncated_decimal(value * 100, decimals) + "%"


def truncated_decimal(value: Fraction, places: int, trim: bool = False) -> str:
    """A non-negative fraction in plain decimal notation, truncated (never rounded up) to ``places``;
    ``trim`` drops trailing zeros (and a bare point), so an exact value reads as it is.

    Example:
        >>> truncated_decimal(Fraction(2, 3), 4), truncated_decimal(Fraction(197, 200), 6, trim=True)
        ('0.6666', '0.985')
    """
    scale = 10**places
    whole, part = divmod(value.numerator * scale // value.denominator, scale)
    text = f"{whole}.{part:0{places}d}" if places else f"{whole}"
    return text.rstrip("0").rstrip(".") if trim and places else text


@dataclass(frozen=True)
class ErrorBudget:
    """How many unavailable slots a service month can take and still meet the target."""

    slots_allowed: int
    slots_used: int
    slots_left: int
    """Never below zero; a month over budget shows ``slots_used > slots_allowed``."""


@lru_cache(maxsize=4096)
def slots_allowed(month: ServiceMonth, policy: SlaPolicy = _DEFAULT_POLICY) -> int:
    """The largest count of unavailable slots that still meets the target.

    8 for any whole calendar month, 4 for 15 days, 0 for a single day. Cached (exact
    :class:`~fractions.Fraction` arithmetic, asked for every app's month at each slot boundary).
    """
    allowed_minutes = month.total_minutes * (1 - policy.availability_target)
    return int(allowed_minutes // SLOT_MINUTES)


def error_budget(month: ServiceMonth, unavailable_slots: int, policy: SlaPolicy = _DEFAULT_POLICY) -> ErrorBudget:
    allowed = slots_allowed(month, policy)
    return ErrorBudget(allowed, unavailable_slots, max(allowed - unavailable_slots, 0))
