"""A service month's statement: its figures and every slot with traffic, judged once.

Example (three slots of March 2019, one of them unavailable):
    >>> from datetime import date
    >>> from zoneinfo import ZoneInfo
    >>> from stream.sla.claims import WorkingDayCalendar
    >>> from stream.sla.coverage import MinuteMap
    >>> from stream.sla.months import calendar_month
    >>> from stream.sla.slots import SLOT_MS, day_start_ms
    >>> policy = SlaPolicy(timezone=ZoneInfo("Asia/Shanghai"))
    >>> ten = day_start_ms(date(2019, 3, 10), policy.timezone) + 120 * SLOT_MS
    >>> counts = {ten: SlotCounts(100, 100), ten + SLOT_MS: SlotCounts(200, 197), ten + 2 * SLOT_MS: SlotCounts(0, 3)}
    >>> start, end = calendar_month(2019, 3).span_ms(policy.timezone)
    >>> events_all_day_on_the_10th = MinuteMap(start, end, bytes(9 * 180) + bytes([255]) * 180)
    >>> s = build_statement("1400000001", calendar_month(2019, 3), counts, (), WorkingDayCalendar(), None, policy,
    ...                     source="report", covered=events_all_day_on_the_10th, as_of_ms=end)
    >>> [(line.verdict, line.success_rate_text) for line in s.slots]
    [('ok', '1'), ('unavailable', '0.985'), ('data-quality', '')]
    >>> s.assessment.availability_display, len(s.digest)
    ('99.98%', 64)
    >>> [p.minutes // 1440 for p in s.coverage.silent]  # no event before the 10th nor after it: no data
    [9, 21]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from stream.sla.assessment import MonthAssessment, assess_month
from stream.sla.claims import WorkingDayCalendar
from stream.sla.coverage import Coverage, MinuteMap
from stream.sla.exemptions import Exemption
from stream.sla.judge import judge
from stream.sla.months import ServiceMonth
from stream.sla.policy import SlaPolicy
from stream.sla.verdict import SlotCounts
from stream.statements.listing import SlotLine, slot_digest, verdict_of

Source = Literal["report", "replay", "live"]
"""Where a statement's counts came from: event files, the topics replayed, or the live state in Redis."""


@dataclass(frozen=True)
class Statement:
    """One app's service month: its figures and every slot with traffic, in time order."""

    assessment: MonthAssessment
    slots: tuple[SlotLine, ...]
    policy: SlaPolicy
    source: Source
    digest: str
    """SHA-256 (hex) of the canonical slot listing (:mod:`stream.statements.listing`)."""
    coverage: Coverage
    """What the input covers of the month, as of when the figures were taken: its silent periods are "no
    data", not "no traffic" (:mod:`stream.sla.coverage`). Not in the digest, which lists slots."""
    open_slots: tuple[SlotLine, ...] = ()
    """Live only: slots counted but not closed yet, judged on their counts so far. They are in no figure, no
    CSV row and not in the digest (the month ledger and ``/metrics`` count closed slots only too); the page
    draws them as open cells."""

    @property
    def app_id(self) -> str:
        return self.assessment.app_id

    @property
    def month(self) -> ServiceMonth:
        return self.assessment.month

    @property
    def running(self) -> bool:
        """The month had not ended when the figures were taken: they are "so far", as of ``coverage.as_of_ms``."""
        return self.coverage.running


def build_statement(
    app_id: str,
    service_month: ServiceMonth,
    counts: Mapping[int, SlotCounts],
    exemptions: Sequence[Exemption],
    calendar: WorkingDayCalendar,
    monthly_fee: Decimal | None,
    policy: SlaPolicy,
    source: Source,
    *,
    covered: MinuteMap,
    as_of_ms: int,
    revisions: Mapping[int, int] | None = None,
    open_counts: Mapping[int, SlotCounts] | None = None,
) -> Statement:
    """The statement of ``service_month`` from the app's per-slot counts (slots outside it are left out).

    The figures come from :func:`stream.sla.assessment.assess_month` and each
    slot's verdict from :func:`stream.sla.judge.judge`, on the same counts and
    exemptions, so the listing and the figures cannot disagree.
    ``covered`` are the minutes in which the whole input (every app) had an
    event, of the calendar month the service month lies in, and ``as_of_ms``
    when the figures were taken (the live watermark, a report's clock): a
    month not over then is "so far", and only its part up to then is measured.
    ``revisions`` maps a slot start to its live verdict's revision;
    ``open_counts`` are the live slots not closed yet (:attr:`Statement.open_slots`).
    """
    in_month = _in_month(counts, service_month, policy)
    assessment = assess_month(app_id, service_month, in_month, exemptions, calendar, monthly_fee, policy)
    slots = _lines(app_id, in_month, exemptions, policy, revisions or {})
    start_ms, end_ms = service_month.span_ms(policy.timezone)
    return Statement(
        assessment,
        slots,
        policy,
        source,
        slot_digest(app_id, service_month, slots, policy.timezone),
        Coverage.measure(covered, start_ms, end_ms, as_of_ms, policy.silent_after_minutes),
        _lines(app_id, _in_month(open_counts or {}, service_month, policy), exemptions, policy, {}),
    )


def _in_month(counts: Mapping[int, SlotCounts], month: ServiceMonth, policy: SlaPolicy) -> dict[int, SlotCounts]:
    """The slots of ``counts`` with traffic inside ``month``, in time order."""
    start_ms, end_ms = month.span_ms(policy.timezone)
    return {
        slot_ms: slot_counts
        for slot_ms, slot_counts in sorted(counts.items())
        if start_ms <= slot_ms < end_ms and (slot_counts.requests or slot_counts.successes)
    }


def _lines(
    app_id: str,
    counts: Mapping[int, SlotCounts],
    exemptions: Sequence[Exemption],
    policy: SlaPolicy,
    revisions: Mapping[int, int],
) -> tuple[SlotLine, ...]:
    """Each slot of ``counts`` judged, as a statement lists it."""
    lines = []
    for slot_ms, slot_counts in counts.items():
        judged = judge(app_id, slot_ms, slot_counts, exemptions, policy)
        verdict = verdict_of(judged)
        lines.append(
            SlotLine(
                slot_ms, slot_counts, judged.verdict.success_rate, verdict, judged.exemption, revisions.get(slot_ms)
            )
        )
    return tuple(lines)
