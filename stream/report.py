"""Month reports from files of room-entry events: the offline path a customer can audit.

Events are counted from the files by :mod:`stream.offline`, with the same rules
the stream uses (``stream.sla.counting``), and judged by ``stream.sla.assessment``;
this module lays the figures out as text for people. The JSON form is
:func:`stream.formats.month_to_json`, the shape the live month ledger has too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from stream.config import ConfigError, Settings
from stream.events import TimeBounds
from stream.formats import InvalidExemption, exemption_from_json
from stream.sla.assessment import MonthAssessment, Period
from stream.sla.availability import display_percent, unavailable_minutes
from stream.sla.exemptions import CLAUSES, in_lookup_order
from stream.sla.months import service_months_in
from stream.sla.slots import local_time
from stream.sla.verdict import SlotCounts
from stream.statements.statement import Statement, build_statement


class CountsByApp(Protocol):
    """Distinct events per app and slot: :class:`stream.offline.counting.CountedEvents`, or a ``SlotTally``."""

    def counts(self, app_id: str) -> dict[int, SlotCounts]:
        """The app's counts per slot start, for the slots that saw any event."""
        ...


@dataclass(frozen=True)
class CalendarMonthReport:
    """The service months of a calendar month, and the traffic no service month covers."""

    statements: list[Statement]
    """Sorted by app and service month start."""
    unmeasured_slots: dict[str, int]
    """Per app, slots with traffic on days no subscription covers: measured nowhere, worth a warning."""


def assess_calendar_month(
    settings: Settings, tally: CountsByApp, year: int, month: int, app_ids: Iterable[str]
) -> CalendarMonthReport:
    """The statement of every service month of the given apps that falls in ``year-month``."""
    tz = settings.policy.timezone
    statements = []
    unmeasured: dict[str, int] = {}
    for app_id in sorted(app_ids):
        terms = settings.terms(app_id)
        counts = tally.counts(app_id)
        service_months = service_months_in(year, month, terms.subscriptions)
        spans = [m.span_ms(tz) for m in service_months]
        outside = sum(1 for slot_ms in counts if not any(a <= slot_ms < b for a, b in spans))
        if outside:
            unmeasured[app_id] = outside
        for service_month in service_months:
            fee = terms.fees.get(service_month.first_day)
            statements.append(
                build_statement(
                    app_id,
                    service_month,
                    counts,
                    settings.exemptions,
                    settings.calendar,
                    fee,
                    settings.policy,
                    source="report",
                )
            )
    return CalendarMonthReport(statements, unmeasured)


def with_exemptions_file(settings: Settings, path: Path) -> Settings:
    """``settings`` with the exemptions of ``path`` (``exempt list --format json``) after its own, as live.

    The order is the live workers': the settings file's exemptions first, then
    the topic's by exemption id (the first that covers a slot names it).
    Raises :class:`stream.config.ConfigError` naming the file and the entry.
    """
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: not a JSON file of exemptions ({error})") from None
    if not isinstance(listed, list) or not all(
        isinstance(item, dict) and isinstance(item.get("id"), str) for item in listed
    ):
        raise ConfigError(
            f'{path}: expected a JSON list of exemptions with an "id" each (sla-stream exempt list --format json)'
        )
    by_id = {}
    for item in listed:
        try:
            by_id[item["id"]] = exemption_from_json(item)
        except InvalidExemption as error:
            raise ConfigError(f"{path}: exemption {item['id']!r}: {error}") from None
    return replace(settings, exemptions=in_lookup_order(settings.exemptions, by_id))


def _clock(ts_ms: int, tz: ZoneInfo, day: date | None = None) -> str:
    moment = local_time(ts_ms, tz)
    return moment.strftime("%H:%M") if day == moment.date() else moment.strftime("%Y-%m-%d %H:%M")


def _period_text(period: Period, tz: ZoneInfo) -> str:
    start = local_time(period.start_ms, tz)
    rate = period.lowest_success_rate
    lowest = "no requests" if rate is None else f"lowest {display_percent(rate)}"
    plural = "slots" if period.slots != 1 else "slot "
    span = f"{_clock(period.start_ms, tz)} – {_clock(period.end_ms, tz, start.date())}"
    text = f"{span}  {period.slots:>4} {plural}  {lowest}"
    if period.exemption is not None:
        note = f": {period.exemption.note}" if period.exemption.note else ""
        text += f"  [{period.exemption.clause}, {CLAUSES[period.exemption.clause]}{note}]"
    return text


def _compensation_text(assessment: MonthAssessment) -> str:
    if assessment.compensation_percent == 0:
        return "none owed"
    if assessment.voucher is None:
        return f"{assessment.compensation_percent}% of the month's fee (fee not on record)"
    return f"{assessment.compensation_percent}% of {assessment.monthly_fee:,} = voucher {assessment.voucher:,}"


def to_text(statements: Sequence[Statement], tz: ZoneInfo, title: str) -> str:
    """A readable report: a summary table, then each service month's figures, periods and digest."""
    assessments = [statement.assessment for statement in statements]
    lines = [title, ""]
    header = (
        f"{'app':<12} {'service month':<24} {'availability':>12} {'SLA':>6} {'bad':>4} {'exempt':>6} "
        f"{'budget left':>11}  compensation"
    )
    lines += [header, "-" * len(header)]
    for a in assessments:
        lines.append(
            f"{a.app_id:<12} {str(a.month):<24} {a.availability_display:>12} {'met' if a.meets_sla else 'MISSED':>6} "
            f"{len(a.unavailable):>4} {len(a.exempt):>6} {a.budget.slots_left:>4} of {a.budget.slots_allowed:<4}  "
            f"{_compensation_text(a)}"
        )
    for statement in statements:
        a = statement.assessment
        claim = f"{a.claim.opens} to {a.claim.closes}"
        if a.claim.estimated:
            claim += " (estimated: that year's holidays are not known yet, counted on weekdays)"
        lines += [
            "",
            f"{a.app_id}  {a.month} ({a.month.days} days, {a.month.total_minutes:,} minutes, {tz.key})",
            f"  requests {a.requests:,}, successes {a.successes:,}, data-quality slots {a.data_quality_slots}",
            f"  availability {a.availability_display} (exactly {a.availability}): "
            f"{'meets' if a.meets_sla else 'BELOW'} the target",
            f"  unavailable {len(a.unavailable)} slots = {unavailable_minutes(len(a.unavailable))} minutes; "
            f"error budget {a.budget.slots_allowed} slots, {a.budget.slots_used} used, {a.budget.slots_left} left",
            f"  compensation: {_compensation_text(a)}; claim window {claim}",
            f"  digest sha256 {statement.digest} ({len(statement.slots):,} slots with traffic; docs/statements.md)",
        ]
        for label, periods in (("unavailable", a.unavailable_periods), ("exempt", a.exempt_periods)):
            if periods:
                lines.append(f"  {label} periods:")
                lines += [f"    {_period_text(p, tz)}" for p in periods]
    if not assessments:
        lines.append("(no service month of any app falls in this month)")
    return "\n".join(lines)


def now_bounds(settings: Settings, now: datetime) -> TimeBounds:
    """Event times accepted in files: from the configured earliest to a little past ``now``."""
    return settings.event_bounds(int(now.timestamp() * 1000))
