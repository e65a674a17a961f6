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
from stream.sla.coverage import MinuteMap
from stream.sla.exemptions import CLAUSES, in_lookup_order
from stream.sla.months import ServiceMonth, begun_by, service_months_in
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
    not_begun: dict[str, list[ServiceMonth]]
    """Per app, its service months of the calendar month that had not begun at ``as_of_ms``: left out."""


def assess_calendar_month(
    settings: Settings,
    tally: CountsByApp,
    year: int,
    month: int,
    app_ids: Iterable[str],
    covered: MinuteMap,
    as_of_ms: int,
) -> CalendarMonthReport:
    """The statement of every service month of the given apps that falls in ``year-month``.

    ``covered`` are the minutes of the month any event was read in, ``as_of_ms`` when the figures are taken
    (:func:`stream.statements.statement.build_statement`)."""
    tz = settings.policy.timezone
    statements = []
    unmeasured: dict[str, int] = {}
    not_begun: dict[str, list[ServiceMonth]] = {}
    for app_id in sorted(app_ids):
        terms = settings.terms(app_id)
        counts = tally.counts(app_id)
        service_months = service_months_in(year, month, terms.subscriptions)
        spans = [m.span_ms(tz) for m in service_months]
        outside = sum(1 for slot_ms in counts if not any(a <= slot_ms < b for a, b in spans))
        if outside:
            unmeasured[app_id] = outside
        begun = begun_by(service_months, tz, as_of_ms)
        if len(begun) < len(service_months):
            not_begun[app_id] = service_months[len(begun) :]
        for service_month in begun:
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
                    covered=covered,
                    as_of_ms=as_of_ms,
                )
            )
    return CalendarMonthReport(statements, unmeasured, not_begun)


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
    """A readable report: a summary table, then each service month's figures, data coverage, periods and digest.

    The first line says when the figures are "so far" (a month still running) and when the data leaves a silent
    period: a month with no data in part of it must never read as a clean one.
    """
    report = TextReport(tz, title)
    for statement in statements:
        report.add(statement)
    return report.text()


class TextReport:
    """The text report built one statement at a time: each adds its summary line and its block, and only those
    lines are kept (not the statement's slots), so a month of many apps is written in bounded memory."""

    def __init__(self, tz: ZoneInfo, title: str) -> None:
        self._tz = tz
        self._title = title
        self._summary: list[str] = []
        self._blocks: list[str] = []
        self._as_of_ms: int | None = None
        """The latest "as of" of a running month among the statements (None: none is running)."""
        self._silent_minutes = 0

    def add(self, statement: Statement) -> None:
        tz = self._tz
        a = statement.assessment
        if statement.running:
            self._as_of_ms = max(self._as_of_ms or statement.coverage.as_of_ms, statement.coverage.as_of_ms)
        self._silent_minutes = max(self._silent_minutes, statement.coverage.silent_minutes)
        notes = "".join(f"  ({note})" for note in _statement_notes(statement))
        self._summary.append(
            f"{a.app_id:<12} {str(a.month):<24} {a.availability_display:>12} {'met' if a.meets_sla else 'MISSED':>6} "
            f"{len(a.unavailable):>4} {len(a.exempt):>6} {a.budget.slots_left:>4} of {a.budget.slots_allowed:<4}  "
            f"{_compensation_text(a)}{notes}"
        )
        claim = f"{a.claim.opens} to {a.claim.closes}"
        if a.claim.estimated:
            claim += " (estimated: that year's holidays are not known yet, counted on weekdays)"
        lines = [
            "",
            f"{a.app_id}  {a.month} ({a.month.days} days, {a.month.total_minutes:,} minutes, {tz.key})",
            *_coverage_lines(statement, tz),
            f"  requests {a.requests:,}, successes {a.successes:,}, data-quality slots {a.data_quality_slots}"
            + ("  (no requests recorded)" if a.requests == 0 else ""),
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
        self._blocks.append("\n".join(lines))

    def text(self) -> str:
        lines = [self._title + self._title_notes(), ""]
        header = (
            f"{'app':<12} {'service month':<24} {'availability':>12} {'SLA':>6} {'bad':>4} {'exempt':>6} "
            f"{'budget left':>11}  compensation"
        )
        lines += [header, "-" * len(header), *self._summary, *self._blocks]
        if not self._summary:
            lines.append("(no service month of any app falls in this month)")
        return "\n".join(lines)

    def _title_notes(self) -> str:
        """What the first line adds: "so far, as of …" for a running month, "INCOMPLETE DATA" for silent periods."""
        notes = []
        if self._as_of_ms is not None:
            notes.append(f"so far, as of {_clock(self._as_of_ms, self._tz)} ({self._tz.key})")
        if self._silent_minutes:
            notes.append(
                f"INCOMPLETE DATA: no event at all in {self._silent_minutes:,} minutes of it (silent periods below)"
            )
        return "".join(f", {note}" for note in notes)


def _statement_notes(statement: Statement) -> list[str]:
    """Why a statement's figures are not the month's whole story, for its line of the summary table."""
    notes = []
    if statement.running:
        notes.append("so far")
    if not statement.coverage.complete:
        notes.append(f"no data in {statement.coverage.silent_minutes:,} min")
    if statement.assessment.requests == 0:
        notes.append("no requests recorded")
    return notes


def _coverage_lines(statement: Statement, tz: ZoneInfo) -> list[str]:
    """The ``data:`` line of a statement, and its silent periods."""
    coverage = statement.coverage
    lines = []
    if statement.running:
        lines.append(f"  so far, as of {_clock(coverage.as_of_ms, tz)}: the month runs to {statement.month.last_day}")
    if coverage.first_ms is None or coverage.last_ms is None:
        return [*lines, "  data: INCOMPLETE: no event of any app in the span measured"]
    span = f"events from {_clock(coverage.first_ms, tz)} to {_clock(coverage.last_ms, tz)}"
    if coverage.complete:
        return [*lines, f"  data: {span}; complete (no {coverage.silent_after_minutes}+ minutes without any event)"]
    lines.append(
        f"  data: INCOMPLETE: {span}, and {len(coverage.silent)} silent "
        f"{'period' if len(coverage.silent) == 1 else 'periods'} of "
        f"{coverage.silent_after_minutes}+ minutes without any event ({coverage.silent_minutes:,} minutes: "
        "no data, not no traffic):"
    )
    lines += [
        f"    {_clock(p.start_ms, tz)} – {_clock(p.end_ms, tz, local_time(p.start_ms, tz).date())}  {p.minutes:>6,} min"
        for p in coverage.silent
    ]
    return lines


def now_bounds(settings: Settings, now: datetime) -> TimeBounds:
    """Event times accepted in files: from the configured earliest to a little past ``now``."""
    return settings.event_bounds(int(now.timestamp() * 1000))
