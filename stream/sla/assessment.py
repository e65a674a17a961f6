"""One app's service month judged end to end: every figure a report or dashboard shows.

This is where the rules meet: slot verdicts, exemptions, availability, budget,
compensation and the claim window, computed from per-slot counts alone. The
offline report and the live stream both call :func:`assess_month`, so they
cannot disagree.

Example:
    >>> from datetime import date
    >>> from zoneinfo import ZoneInfo
    >>> from stream.sla.months import calendar_month
    >>> from stream.sla.slots import day_start_ms, SLOT_MS
    >>> march = calendar_month(2019, 3)
    >>> ten = day_start_ms(date(2019, 3, 10), ZoneInfo("Asia/Shanghai")) + 120 * SLOT_MS
    >>> counts = {ten + i * SLOT_MS: SlotCounts(requests=100, successes=98) for i in range(6)}
    >>> a = assess_month("1400000001", march, counts, exemptions=(), calendar=WorkingDayCalendar())
    >>> a.availability_display, a.meets_sla, a.budget.slots_left, len(a.unavailable_periods)
    ('99.93%', True, 2, 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from stream.sla.availability import ErrorBudget, availability, display_percent, error_budget, meets_target
from stream.sla.claims import ClaimWindow, WorkingDayCalendar, claim_window
from stream.sla.compensation import compensation_percent, voucher
from stream.sla.exemptions import Exemption
from stream.sla.judge import JudgedSlot, judge
from stream.sla.months import ServiceMonth
from stream.sla.policy import SlaPolicy
from stream.sla.slots import SLOT_MS
from stream.sla.verdict import SlotCounts

_DEFAULT_POLICY = SlaPolicy()


@dataclass(frozen=True)
class Period:
    """Consecutive slots merged for reading: ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    slots: int
    lowest_success_rate: Fraction | None
    """The worst slot's rate; ``None`` only when no slot in the period had requests."""
    exemption: Exemption | None = None


def merge_periods(slots: Sequence[JudgedSlot]) -> list[Period]:
    """Merge slots that follow each other (and share an exemption) into periods, in time order."""
    periods: list[Period] = []
    for slot in sorted(slots, key=lambda s: s.slot_ms):
        rate = slot.verdict.success_rate
        last = periods[-1] if periods else None
        if last is not None and last.end_ms == slot.slot_ms and last.exemption == slot.exemption:
            rates = [r for r in (last.lowest_success_rate, rate) if r is not None]
            periods[-1] = Period(
                last.start_ms, slot.slot_ms + SLOT_MS, last.slots + 1, min(rates) if rates else None, last.exemption
            )
        else:
            periods.append(Period(slot.slot_ms, slot.slot_ms + SLOT_MS, 1, rate, slot.exemption))
    return periods


@dataclass(frozen=True)
class MonthAssessment:
    """Every figure of one app's service month, derived from its slot counts."""

    app_id: str
    month: ServiceMonth
    requests: int
    successes: int
    unavailable: tuple[JudgedSlot, ...]
    """Unavailable slots that count against the month."""
    exempt: tuple[JudgedSlot, ...]
    """Slots unavailable by their counts but covered by an exemption: they do not count."""
    data_quality_slots: int
    """Slots with more successes than requests (read as 100%)."""
    availability: Fraction
    meets_sla: bool
    budget: ErrorBudget
    compensation_percent: int
    monthly_fee: Decimal | None
    voucher: Decimal | None
    claim: ClaimWindow

    @property
    def availability_display(self) -> str:
        return display_percent(self.availability)

    @property
    def unavailable_periods(self) -> list[Period]:
        return merge_periods(self.unavailable)

    @property
    def exempt_periods(self) -> list[Period]:
        return merge_periods(self.exempt)


def assess_month(
    app_id: str,
    month: ServiceMonth,
    slot_counts: Mapping[int, SlotCounts],
    exemptions: Sequence[Exemption],
    calendar: WorkingDayCalendar,
    monthly_fee: Decimal | None = None,
    policy: SlaPolicy = _DEFAULT_POLICY,
    totals: SlotCounts | None = None,
) -> MonthAssessment:
    """Judge every slot of ``month`` that has counts and derive the month's figures.

    ``slot_counts`` maps slot start (epoch ms) to the app's counts; slots
    outside the service month are ignored, absent slots had no requests.
    ``totals`` gives the month's requests and successes when ``slot_counts``
    holds only the slots that matter to the verdicts (the live state keeps
    daily totals instead of every slot); by default they are summed.
    """
    start_ms, end_ms = month.span_ms(policy.timezone)
    requests = successes = data_quality = 0
    unavailable: list[JudgedSlot] = []
    exempt: list[JudgedSlot] = []
    for slot_ms, counts in slot_counts.items():
        if not start_ms <= slot_ms < end_ms:
            continue
        requests += counts.requests
        successes += counts.successes
        judged = judge(app_id, slot_ms, counts, exemptions, policy)
        data_quality += judged.verdict.data_quality_issue
        if judged.verdict.unavailable:
            (exempt if judged.exempt else unavailable).append(judged)
    value, meets, budget, percent = _month_figures(month, len(unavailable), policy)
    if totals is not None:
        requests, successes = totals.requests, totals.successes
    return MonthAssessment(
        app_id=app_id,
        month=month,
        requests=requests,
        successes=successes,
        unavailable=tuple(sorted(unavailable, key=lambda s: s.slot_ms)),
        exempt=tuple(sorted(exempt, key=lambda s: s.slot_ms)),
        data_quality_slots=data_quality,
        availability=value,
        meets_sla=meets,
        budget=budget,
        compensation_percent=percent,
        monthly_fee=monthly_fee,
        voucher=None if monthly_fee is None else voucher(monthly_fee, percent),
        claim=claim_window(month, calendar, policy),
    )


@lru_cache(maxsize=4096)
def _month_figures(
    month: ServiceMonth, unavailable_slots: int, policy: SlaPolicy
) -> tuple[Fraction, bool, ErrorBudget, int]:
    """Availability, whether it meets the target, the error budget and the voucher percent of a month with
    ``unavailable_slots``: the same for every app with as many, so cached (the live closer asks it for every
    app's month at each slot boundary)."""
    value = availability(month, unavailable_slots)
    return (
        value,
        meets_target(value, policy),
        error_budget(month, unavailable_slots, policy),
        compensation_percent(value, policy),
    )
