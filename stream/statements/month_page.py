"""The HTML month page: one app's service month as a self-contained page a customer can audit (docs/statements.md).

One renderer for both uses: ``report``/``replay --format html`` write
:func:`render_month_page` of a statement to a file, and the live worker serves
the same function's output given a :class:`LiveContext` (the page then
refreshes itself, says how fresh it is, and marks open and future slots).
:func:`render_index` is the live index of every app's running month.

The page needs nothing from the network: its CSS is inline
(:mod:`stream.statements.page_style`), the heatmap is inline SVG, there is no
script, and no URL of any kind except, live, the links between the live
pages. Every value taken from the data (app ids, exemption notes) is
escaped.

Every headline figure is also in an element with a ``data-figure``
attribute whose text is that figure exactly as
:func:`stream.formats.month_to_json` gives it (``true``/``false`` for
booleans, nothing for null), and every heatmap cell is an SVG ``rect`` with
``class="slot …"``, ``data-slot`` (the slot's local start, ISO 8601) and
``data-verdict``, so a program can check a page against the JSON report.

Example:
    >>> from stream.sla.claims import WorkingDayCalendar
    >>> from stream.sla.months import calendar_month
    >>> from stream.sla.policy import SlaPolicy
    >>> from stream.sla.verdict import SlotCounts
    >>> from stream.statements.statement import build_statement
    >>> from stream.sla.coverage import MinuteMap
    >>> start, end = calendar_month(2019, 3).span_ms(SlaPolicy().timezone)
    >>> events_from_the_2nd_on = MinuteMap(start, end, bytes(180) + bytes([255]) * 6000)
    >>> s = build_statement("1400000001", calendar_month(2019, 3), {1552183200000: SlotCounts(200, 197)}, (),
    ...                     WorkingDayCalendar(), None, SlaPolicy(), "report", covered=events_from_the_2nd_on,
    ...                     as_of_ms=end)
    >>> page = render_month_page(s)
    >>> page.count('class="slot '), page.count('data-verdict="unavailable"'), page.count('data-verdict="no-data"')
    (8928, 1, 288)
    >>> '<b data-figure="availability_display">99.98%</b>' in page
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from stream.formats import statement_to_json
from stream.sla.assessment import MonthAssessment, Period
from stream.sla.availability import display_percent, truncated_decimal, unavailable_minutes
from stream.sla.coverage import Coverage
from stream.sla.exemptions import CLAUSES, Exemption
from stream.sla.policy import SLOT_MINUTES
from stream.sla.slots import SLOT_MS, day_start_ms, local_time, slots_between
from stream.statements import page_style as style
from stream.statements.index_query import Q_MAX, SORT_LABELS, IndexPage
from stream.statements.listing import SlotLine
from stream.statements.statement import Source, Statement


@dataclass(frozen=True)
class LiveContext:
    """What a live page adds: it refreshes itself and says how fresh it is."""

    refresh_s: int
    """Seconds between reloads: ``<meta http-equiv="refresh" content="N">``."""
    now_ms: int
    """When the page was read (its banner's "as of"); the statement's own time is its coverage's."""
    index_href: str
    """The link back to the index of apps (``/``)."""


SOURCES: dict[Source, str] = {
    "report": "offline report, counted from event files",
    "replay": "replay of the Kafka topics",
    "live": "live stream",
}

CELL_VERDICTS = ("ok", "unavailable", "exempt", "data-quality", "none", "no-data", "open", "future")
"""The ``data-verdict`` of a heatmap cell: a statement's verdicts, ``none`` (no traffic), ``no-data`` (no
traffic, and wholly inside a silent period of the input: nothing was measured), ``future`` (no traffic, at or
after the time a running month's figures are as of) and live only ``open`` (traffic counted, not closed yet)."""

FIGURES: dict[str, tuple[str, ...]] = {
    "availability_display": ("availability_display",),
    "availability_exact": ("availability_exact",),
    "meets_sla": ("meets_sla",),
    "slots_allowed": ("error_budget", "slots_allowed"),
    "slots_used": ("error_budget", "slots_used"),
    "slots_left": ("error_budget", "slots_left"),
    "unavailable_slots": ("unavailable_slots",),
    "unavailable_minutes": ("unavailable_minutes",),
    "exempt_slots": ("exempt_slots",),
    "data_quality_slots": ("data_quality_slots",),
    "requests": ("requests",),
    "successes": ("successes",),
    "compensation_percent": ("compensation", "percent"),
    "monthly_fee": ("compensation", "monthly_fee"),
    "voucher": ("compensation", "voucher"),
    "claim_opens": ("claim_window", "opens"),
    "claim_closes": ("claim_window", "closes"),
    "claim_estimated": ("claim_window", "estimated"),
    "running": ("running",),
    "as_of": ("as_of",),
    "coverage_complete": ("coverage", "complete"),
    "silent_minutes": ("coverage", "silent_minutes"),
    "covered_from": ("coverage", "covered_from"),
    "covered_until": ("coverage", "covered_until"),
}
"""Each ``data-figure`` of the page and where :func:`stream.formats.statement_to_json` keeps it (``digest``
aside: the page shows it in its own section)."""

HIGH_RATE = Fraction(999, 1000)
"""Heatmap band: an ok slot at least this good (short of 100%) is drawn lighter than one just above the threshold."""
LOW_RATE = Fraction(95, 100)
"""Heatmap band: an unavailable slot under this is drawn darker than one just under the threshold."""

# Heatmap geometry, in SVG user units.
_CELL_W = 4
_CELL_H = 13
_ROW = 16
_LABEL_W = 46
_TOP = 22
_GROUP = 36  # slots per group of three hours
_GROUP_GAP = 2


def figure_text(value: Any) -> str:
    """A JSON value as a ``data-figure`` element's text: ``true``/``false``, nothing for null, else ``str``.

    Example:
        >>> figure_text(True), figure_text(None), figure_text(8), figure_text("99.89%")
        ('true', '', '8', '99.89%')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def page_figures(statement: Statement) -> dict[str, str]:
    """Every ``data-figure`` of the statement's page and its text (taken from :func:`statement_to_json`)."""
    figures = statement_to_json(statement)
    texts = {}
    for name, path in FIGURES.items():
        value: Any = figures
        for key in path:
            value = value[key]
        texts[name] = figure_text(value)
    texts["digest"] = statement.digest
    return texts


# --- the month page ---------------------------------------------------------------------------------------------


def render_month_page(statement: Statement, live: LiveContext | None = None) -> str:
    """The statement's month page, as a complete HTML document (a file page when ``live`` is None)."""
    a = statement.assessment
    tz = statement.policy.timezone
    month = a.month
    title = f"SLA statement: app {statement.app_id}, {month.first_day.isoformat()} to {month.last_day.isoformat()}"
    parts = [
        _head(title, live),
        "<body><main>",
        _header(statement, live),
        _headline(statement),
        _heatmap(statement, live),
        _periods(a, tz),
        _exemptions_applied(a, tz),
        _figures_table(statement),
        _digest(statement),
        _how(statement),
        f"<footer>sla-stream statement · {escape(SOURCES[statement.source])} · "
        f"rules: docs/sla.md, statements: docs/statements.md</footer>",
        "</main></body></html>\n",
    ]
    return "\n".join(parts)


def _head(title: str, live: LiveContext | None) -> str:
    refresh = "" if live is None else f'<meta http-equiv="refresh" content="{int(live.refresh_s)}">\n'
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{refresh}<title>{escape(title)}</title>\n"
        f"<style>\n{style.CSS}{style.cell_css()}\n</style></head>"
    )


def _header(statement: Statement, live: LiveContext | None) -> str:
    month = statement.month
    tz = statement.policy.timezone
    lines = [
        f"<header><h1>SLA statement · app {escape(statement.app_id)}</h1>",
        f'<p class="sub">Service month <b>{_day(month.first_day)} to {_day(month.last_day)}</b> '
        f"({month.days} days, {month.total_minutes:,} minutes) · time zone {escape(tz.key)} · "
        f"source: {escape(SOURCES[statement.source])}</p>",
    ]
    if live is not None:
        lines.append(_live_banner(live, tz, running=statement.running))
    lines += _data_notes(statement)
    lines.append("</header>")
    return "\n".join(lines)


def _data_notes(statement: Statement) -> list[str]:
    """What the figures do not cover: a month still running, silent input, an app without requests.

    No figure without data: each is said where the figures are, not only in the JSON.
    """
    tz = statement.policy.timezone
    coverage = statement.coverage
    notes = []
    if statement.running:
        as_of = local_time(coverage.as_of_ms, tz).strftime("%Y-%m-%d %H:%M")
        notes.append(
            f'<p class="note" data-note="so-far">So far: the figures are as of <b>{as_of}</b> and the month runs to '
            f"{_day(statement.month.last_day)}; the slots after that are not measured yet.</p>"
        )
    if not coverage.has_data and not coverage.silent:
        notes.append(
            '<p class="note nodata" data-note="no-data"><b>Nothing measured yet.</b> The figures are as of '
            f"{local_time(coverage.as_of_ms, tz):%Y-%m-%d %H:%M}, before any minute of this month was read.</p>"
        )
    elif not coverage.complete:
        periods = "".join(
            f"<li>{local_time(p.start_ms, tz):%Y-%m-%d %H:%M} to {local_time(p.end_ms, tz):%Y-%m-%d %H:%M} "
            f"({p.minutes:,} minutes)</li>"
            for p in coverage.silent
        )
        notes.append(
            '<div class="note nodata" data-note="no-data"><p><b>Incomplete data.</b> No event of any app was '
            f"read in {coverage.silent_minutes:,} minutes of this month: "
            f"{_count(len(coverage.silent), 'silent period')} of {coverage.silent_after_minutes} minutes or more "
            "(grey cross-hatched cells on the grid). The agreement reads a slot without requests as available, "
            "so those minutes count as available here, but nothing was measured in them: no data, not no "
            f"traffic.</p><ul>{periods}</ul></div>"
        )
    if statement.assessment.requests == 0:
        notes.append(
            '<p class="note" data-note="no-requests"><b>No requests recorded</b> for this app in this month: '
            "its 100% is the agreement's reading of a month without traffic.</p>"
        )
    return notes


def _live_banner(live: LiveContext, tz: ZoneInfo, running: bool, link: bool = True) -> str:
    as_of = local_time(live.now_ms, tz).strftime("%Y-%m-%d %H:%M:%S")
    index = "" if not (link and live.index_href) else f'<a href="{escape(live.index_href)}">all apps</a>'
    so_far = " (figures of the slots closed so far: open ones are outlined and not counted yet)" if running else ""
    return (
        f'<p class="live">Live: as of <b>{as_of}</b> ({escape(tz.key)}){so_far} · '
        f"refreshes every {int(live.refresh_s)} s{' · ' + index if index else ''}</p>"
    )


def _headline(statement: Statement) -> str:
    a = statement.assessment
    policy = statement.policy
    target = _plain_percent(policy.availability_target)
    budget = a.budget
    minutes = unavailable_minutes(len(a.unavailable))
    status = (
        f'<span class="badge met">meets the {target} target</span>'
        if a.meets_sla
        else f'<span class="badge missed">below the {target} target</span>'
    )
    if budget.slots_used == 0:
        used_share = 0
    else:
        used_share = 100 if budget.slots_allowed == 0 else min(100, 100 * budget.slots_used // budget.slots_allowed)
    over = budget.slots_used > budget.slots_allowed
    budget_note = (
        f"over by {budget.slots_used - budget.slots_allowed}: the target is missed"
        if over
        else f"{budget.slots_left} left"
    )
    overall = "" if a.requests == 0 else f" ({display_percent(Fraction(min(a.successes, a.requests), a.requests))})"
    cards = [
        _card(
            "Availability",
            f'<div class="big">{escape(a.availability_display)}</div>{status}'
            f'<p class="small">truncated, never rounded up; exactly {_fraction_percent(a.availability)} '
            f"= 1 − {minutes:,} / {a.month.total_minutes:,} minutes</p>",
        ),
        _card(
            "Error budget",
            f'<div class="big">{budget.slots_used} of {budget.slots_allowed}</div>'
            f"<p>used {budget.slots_used} of {budget.slots_allowed} slots allowed; {budget_note}</p>"
            f'<div class="meter{" over" if over else ""}"><span style="width:{used_share}%"></span></div>',
        ),
        _card(
            "Unavailable",
            f'<div class="big">{minutes:,} min</div>'
            f"<p>{_count(len(a.unavailable), 'unavailable slot')} of {SLOT_MINUTES} minutes · "
            f"{_count(len(a.exempt), 'exempt slot')} (not counted) · "
            f"{_count(a.data_quality_slots, 'data-quality slot')}</p>",
        ),
        _card(
            "Requests",
            f'<div class="big">{a.requests:,}</div><p>{a.successes:,} successes{overall}</p>',
        ),
        _card("Compensation", _compensation_html(a)),
        _card("Claim window", _claim_html(a)),
    ]
    return '<section class="cards" aria-label="Headline figures">' + "".join(cards) + "</section>"


def _card(title: str, body: str) -> str:
    return f'<div class="card"><h3>{title}</h3>{body}</div>'


def _compensation_html(a: MonthAssessment) -> str:
    fee = "fee not on record" if a.monthly_fee is None else f"monthly fee {_money(a.monthly_fee)}"
    if a.compensation_percent == 0:
        return f'<div class="big">none</div><p>target met: nothing owed ({fee})</p>'
    if a.voucher is None:
        return f'<div class="big">{a.compensation_percent}%</div><p>of the month\'s fee; {fee}, so no amount</p>'
    return f'<div class="big">{a.compensation_percent}%</div><p>of the {fee}: voucher <b>{_money(a.voucher)}</b></p>'


def _claim_html(a: MonthAssessment) -> str:
    claim = a.claim
    estimated = (
        '<span class="badge est">estimated</span><p class="small">that year\'s public holidays are not known yet: '
        "counted on weekdays only</p>"
        if claim.estimated
        else ""
    )
    return (
        f'<div class="big dates">{_day(claim.opens)} to {_day(claim.closes)}</div>'
        f"<p>opens {_day(claim.opens)}, closes {_day(claim.closes)} (both included)</p>{estimated}"
    )


_FIGURE_LABELS = {
    "availability_display": "availability, truncated to two decimals",
    "availability_exact": "availability, exact fraction",
    "meets_sla": "meets the target",
    "slots_allowed": "error budget: slots allowed",
    "slots_used": "error budget: slots used",
    "slots_left": "error budget: slots left",
    "unavailable_slots": "unavailable slots",
    "unavailable_minutes": "unavailable minutes",
    "exempt_slots": "exempt slots (not counted)",
    "data_quality_slots": "data-quality slots",
    "requests": "requests",
    "successes": "successes",
    "compensation_percent": "compensation, percent of the fee",
    "monthly_fee": "monthly fee (empty: not on record)",
    "voucher": "voucher (empty: no fee on record)",
    "claim_opens": "claim window opens",
    "claim_closes": "claim window closes",
    "claim_estimated": "claim window estimated",
    "running": "month still running: figures so far",
    "as_of": "figures as of (empty: the month is over)",
    "coverage_complete": "data covers the month (no silent period)",
    "silent_minutes": "minutes in silent periods: no data",
    "covered_from": "first minute with an event (any app)",
    "covered_until": "end of the last minute with an event",
}


def _figures_table(statement: Statement) -> str:
    """Every figure exactly as the JSON report writes it, each in its ``data-figure`` element."""
    texts = page_figures(statement)
    rows = "".join(
        f'<tr><td>{_FIGURE_LABELS[name]}</td><td><b data-figure="{name}">{escape(texts[name])}</b></td>'
        f"<td><code>{'.'.join(path)}</code></td></tr>"
        for name, path in FIGURES.items()
    )
    return (
        "<section><h2>Every figure, as the JSON report gives it</h2>"
        '<p class="small">The same values as <code>sla-stream report --format json</code>, field by field.</p>'
        '<div class="scroll"><table class="figures"><thead><tr><th>figure</th><th>value</th><th>JSON field</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


# --- the heatmap ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bands:
    """The heatmap's colour bands for a policy, with their legend labels."""

    threshold: Fraction

    def style_of(self, line: SlotLine) -> style.CellStyle:
        if line.verdict == "exempt":
            return style.EXEMPT
        if line.verdict == "data-quality":
            return style.DATA_QUALITY
        rate = line.success_rate if line.success_rate is not None else Fraction(1)
        if line.verdict == "unavailable":
            return style.BAD if rate >= LOW_RATE else style.WORST
        if rate >= 1:
            return style.PERFECT
        return style.HIGH if rate >= HIGH_RATE else style.LOW_OK

    def legend(self, live: bool, no_data: bool, future: bool) -> list[tuple[style.CellStyle, str]]:
        threshold = _plain_percent(self.threshold)
        entries = [(style.PERFECT, "ok, 100%")]
        if self.threshold < HIGH_RATE:
            entries += [
                (style.HIGH, f"ok, {_plain_percent(HIGH_RATE)} to under 100%"),
                (style.LOW_OK, f"ok, {threshold} to under {_plain_percent(HIGH_RATE)}"),
            ]
        else:
            entries.append((style.HIGH, f"ok, {threshold} to under 100%"))
        if self.threshold > LOW_RATE:
            entries += [
                (style.BAD, f"unavailable, {_plain_percent(LOW_RATE)} to under {threshold} (hatched)"),
                (style.WORST, f"unavailable, under {_plain_percent(LOW_RATE)} (hatched)"),
            ]
        else:
            entries.append((style.WORST, f"unavailable, under {threshold} (hatched)"))
        entries += [
            (style.EXEMPT, "exempt: unavailable, but not counted (dotted)"),
            (style.DATA_QUALITY, "data quality: more successes than requests, read as 100%"),
            (style.NO_TRAFFIC, "no traffic"),
        ]
        if no_data:
            entries.append((style.NO_DATA, "no data: no event of any app read (cross-hatched)"))
        if live:
            entries.append((style.OPEN, "open: still counting (outlined, coloured as so far)"))
        if future:
            entries.append((style.FUTURE, "not measured yet"))
        return entries


def _days(statement: Statement) -> Iterator[tuple[date, list[int]]]:
    """Each local day of the service month and its slots' starts (288, or 276/300 on a day the clocks change)."""
    tz = statement.policy.timezone
    day = statement.month.first_day
    while day <= statement.month.last_day:
        following = day + timedelta(days=1)
        yield day, list(slots_between(day_start_ms(day, tz), day_start_ms(following, tz), tz))
        day = following


def _column_x(column: int) -> int:
    return _LABEL_W + column * _CELL_W + (column // _GROUP) * _GROUP_GAP


def _heatmap(statement: Statement, live: LiveContext | None) -> str:
    tz = statement.policy.timezone
    bands = _Bands(statement.policy.slot_success_min)
    by_slot = {line.slot_ms: line for line in statement.slots + statement.open_slots}
    rows = []
    widest = 24 * 60 // SLOT_MINUTES
    total = 0
    for index, (day, slots) in enumerate(_days(statement)):
        total += len(slots)
        cells, columns = _day_cells(day, slots, by_slot, bands, statement, live is not None)
        widest = max(widest, columns)
        weekend = ' class="we"' if day.weekday() >= 5 else ""
        rows.append(
            f'<g transform="translate(0,{_TOP + index * _ROW})"><text x="0" y="10"{weekend}>'
            f"{day:%a} {day.day}</text>\n{cells}</g>"
        )
    width = _column_x(widest - 1) + _CELL_W + 2
    height = _TOP + len(rows) * _ROW
    hours = "".join(
        f'<text x="{_column_x(hour * 60 // SLOT_MINUTES)}" y="11">{hour}:00</text>' for hour in range(0, 24, 3)
    )
    ticks = "".join(f"M{_column_x(hour * 60 // SLOT_MINUTES)} 15v4" for hour in range(24))
    legend = "".join(
        f'<li><svg viewBox="0 0 22 14" aria-hidden="true"><rect class="sw {s.css_class}{_open_mark(s)}" '
        f'width="22" height="14"/></svg>{escape(label)}</li>'
        for s, label in bands.legend(live is not None, not statement.coverage.complete, statement.running)
    )
    return (
        '<section class="heatmap"><h2>Every 5-minute slot</h2>'
        f"<p>One row per day ({escape(tz.key)} time), one cell per 5-minute slot from 0:00 to 24:00: "
        f"{total:,} slots in this service month. Point at (or long-press) a cell for its figures. "
        "An incident shows as a hatched run of cells.</p>"
        '<p class="hint small">On a narrow screen, swipe the grid sideways for the rest of the day.</p>'
        f'<ul class="legend">{legend}</ul>'
        f'<div class="heat"><svg viewBox="0 0 {width} {height}" aria-label="Heatmap of every 5-minute slot">'
        f"<defs>{style.PATTERNS}</defs>"
        f'<g>{hours}<path d="{ticks}" stroke="#9aa1ab" stroke-width="1"/></g>\n'
        + "\n".join(rows)
        + "</svg></div></section>"
    )


def _open_mark(cell: style.CellStyle) -> str:
    """The legend's open swatch is an outlined 100% cell, as an open slot with no failure so far is drawn."""
    return f" {style.PERFECT.css_class}" if cell is style.OPEN else ""


def _day_cells(
    day: date,
    slots: list[int],
    by_slot: Mapping[int, SlotLine],
    bands: _Bands,
    statement: Statement,
    live: bool,
) -> tuple[str, int]:
    """One day's cells and the columns they take.

    A cell's column is its local clock time (10:00 is column 120 every day),
    so the days line up; an hour the clocks skip leaves a gap, and an hour
    they repeat pushes the rest of that day one hour to the right.
    """
    tz = statement.policy.timezone
    coverage = statement.coverage
    no_data = {
        slot_ms
        for period in coverage.silent
        for slot_ms in slots_between(period.start_ms, period.end_ms, tz)
        if period.start_ms <= slot_ms and slot_ms + SLOT_MS <= period.end_ms
    }
    measured_until = coverage.end_ms if statement.running else None
    changes = len(slots) != 24 * 60 // SLOT_MINUTES or (
        local_time(slots[0], tz).utcoffset() != local_time(slots[-1], tz).utcoffset()
    )
    cells = []
    column = -1
    for slot_ms in slots:
        start = local_time(slot_ms, tz)
        column = max((start.hour * 60 + start.minute) // SLOT_MINUTES, column + 1)
        line = by_slot.get(slot_ms)
        if line is None:
            cell_class, verdict, what = _empty_cell(slot_ms, no_data, measured_until)
        else:
            cell_class, verdict, what = _cell(line, bands, live)
        end = local_time(slot_ms + SLOT_MS, tz)
        when = f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"
        if changes:
            when += f" (UTC{start:%z})"
        cells.append(
            f'<rect class="slot {cell_class}" x="{_column_x(column)}" width="{_CELL_W}" height="{_CELL_H}" '
            f'data-slot="{start.isoformat()}" data-verdict="{verdict}"><title>{when} · {what}</title></rect>'
        )
    return "\n".join(cells), column + 1


def _empty_cell(slot_ms: int, no_data: Set[int], measured_until: int | None) -> tuple[str, str, str]:
    """A cell without traffic: not measured yet, wholly in a silent period of the input (``no_data``: no data), or
    no traffic."""
    if measured_until is not None and slot_ms + SLOT_MS > measured_until:
        return style.FUTURE.css_class, "future", "not measured yet"
    if slot_ms in no_data:
        return style.NO_DATA.css_class, "no-data", "no data: no event of any app was read"
    return style.NO_TRAFFIC.css_class, "none", "no traffic"


def _cell(line: SlotLine, bands: _Bands, live: bool) -> tuple[str, str, str]:
    """A cell with traffic: its CSS class (after ``slot``), its ``data-verdict`` and the end of its tooltip."""
    counts = line.counts
    rate = "" if line.success_rate is None or counts.requests == 0 else f" · {_rate(line.success_rate)}"
    figures = f"{_count(counts.requests, 'request')} · {_count(counts.successes, 'success', 'successes')}{rate}"
    cell_class = bands.style_of(line).css_class
    if line.verdict == "exempt" and line.exemption is not None:
        said = f"exempt: {escape(line.exemption.clause)}"
    elif line.verdict == "data-quality":
        said = "data quality: more successes than requests, read as 100%"
    else:
        said = line.verdict
    if live and line.revision is None:  # a live statement's open slots have no revision yet
        return f"{cell_class} {style.OPEN.css_class}", "open", f"{figures} · open, still counting: {said} so far"
    return cell_class, line.verdict, f"{figures} · {said}"


# --- periods, exemptions, digest, method ------------------------------------------------------------------------


def _periods(a: MonthAssessment, tz: ZoneInfo) -> str:
    bad = a.unavailable_periods
    exempt = a.exempt_periods
    if bad:
        rows = "".join(
            f'<tr>{_span_cells(p, tz)}<td class="num">{p.slots}</td>'
            f'<td class="num">{unavailable_minutes(p.slots)}</td><td class="num">{_lowest(p)}</td></tr>'
            for p in bad
        )
        bad_html = (
            '<div class="scroll"><table><thead><tr><th>start</th><th>end</th><th class="num">slots</th>'
            '<th class="num">minutes</th><th class="num">lowest success rate</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )
    else:
        bad_html = "<p>None: no slot counted against the month.</p>"
    if exempt:
        rows = "".join(
            f'<tr>{_span_cells(p, tz)}<td class="num">{p.slots}</td><td class="num">{_lowest(p)}</td>'
            f'<td class="nowrap">{_clause(p.exemption)}</td><td class="note">{_note(p.exemption)}</td></tr>'
            for p in exempt
        )
        exempt_html = (
            '<div class="scroll"><table><thead><tr><th>start</th><th>end</th><th class="num">slots</th>'
            '<th class="num">lowest success rate</th><th>clause</th><th>note</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )
    else:
        exempt_html = "<p>None.</p>"
    return (
        f"<section><h2>Unavailable periods ({_count(len(a.unavailable), 'slot')})</h2>"
        '<p class="small">Consecutive unavailable slots merged; local times, end exclusive.</p>'
        f"{bad_html}</section>"
        f"<section><h2>Exempt periods ({_count(len(a.exempt), 'slot')}, not counted)</h2>"
        '<p class="small">Slots unavailable by their counts but covered by an exemption window.</p>'
        f"{exempt_html}</section>"
    )


def _span_cells(period: Period, tz: ZoneInfo) -> str:
    start = local_time(period.start_ms, tz)
    end = local_time(period.end_ms, tz)
    end_text = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    return f'<td class="nowrap">{start:%Y-%m-%d %H:%M}</td><td class="nowrap">{end_text}</td>'


def _lowest(period: Period) -> str:
    rate = period.lowest_success_rate
    return "no requests" if rate is None else _rate(rate)


def _rate(rate: Fraction) -> str:
    """A success rate as a percentage truncated to two decimals (never rounded up); 100% plain."""
    return "100%" if rate >= 1 else display_percent(rate)


def _clause(exemption: Exemption | None) -> str:
    return "" if exemption is None else f"<code>{escape(exemption.clause)}</code>"


def _note(exemption: Exemption | None) -> str:
    return "" if exemption is None else escape(exemption.note)


def _exemptions_applied(a: MonthAssessment, tz: ZoneInfo) -> str:
    applied: dict[Exemption, int] = {}
    for judged in a.exempt:
        if judged.exemption is not None:
            applied[judged.exemption] = applied.get(judged.exemption, 0) + 1
    if not applied:
        return "<section><h2>Exemptions applied</h2><p>None: no exemption covers a slot of this month.</p></section>"
    rows = []
    for exemption, slots in applied.items():
        start = local_time(exemption.start_ms, tz)
        end = local_time(exemption.end_ms, tz)
        scope = "this app" if exemption.app_id is not None else "every app"
        rows.append(
            f'<tr><td class="nowrap">{_clause(exemption)}</td><td>{escape(CLAUSES[exemption.clause])}</td>'
            f'<td class="nowrap">{start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S}</td><td>{scope}</td>'
            f'<td class="num">{slots}</td><td class="note">{_note(exemption)}</td></tr>'
        )
    return (
        "<section><h2>Exemptions applied</h2>"
        '<p class="small">Each window exempts the unavailable slots it touches, even by a moment; '
        "the clause is the agreement's ground for it.</p>"
        '<div class="scroll"><table><thead><tr><th>clause</th><th>ground</th><th>window (end exclusive)</th>'
        '<th>for</th><th class="num">slots exempted</th><th>note</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _digest(statement: Statement) -> str:
    return (
        "<section><h2>Digest of the slot listing</h2>"
        f'<p>SHA-256: <code class="digest" data-figure="digest">{statement.digest}</code></p>'
        f"<p>It fingerprints the {_count(len(statement.slots), 'slot')} with traffic of this statement: take the "
        "first six columns of this app and month's rows of the slot CSV (<code>--format csv</code>), one line per "
        "slot ended by a line feed, and the SHA-256 of that text must equal this digest "
        "(the recipe is in docs/statements.md, “The digest”).</p></section>"
    )


def _how(statement: Statement) -> str:
    policy = statement.policy
    a = statement.assessment
    threshold = _plain_percent(policy.slot_success_min)
    tiers = "; ".join(f"below {_plain_percent(tier.below)}: {tier.percent}%" for tier in policy.compensation_tiers)
    items = [
        f"Time is cut into {SLOT_MINUTES}-minute slots aligned to the clock in {escape(policy.timezone.key)} "
        "(10:00, 10:05, …); days run from midnight to midnight there.",
        "Each request counts once, however often it was delivered; a success counts in the slot of its request.",
        f"A slot with requests is <b>unavailable</b> when successes ÷ requests is below {threshold} "
        f"(exactly {threshold} is fine). More successes than requests is a data-quality slot, read as 100%.",
        "A slot unavailable by its counts that touches an exemption window (a ground the agreement lists) is "
        "<b>exempt</b>: it does not count.",
        f"Availability = 1 − unavailable minutes ÷ minutes of the service month ({a.month.days} days × 1,440 = "
        f"{a.month.total_minutes:,}), shown truncated to two decimals, never rounded up.",
        f"The target is availability of at least {_plain_percent(policy.availability_target)}; the error budget "
        f"({_count(a.budget.slots_allowed, 'slot')} here) is the most unavailable slots that still meet it.",
        f"Below the target a voucher is owed, a share of the month's fee: {tiers} (each tier includes its lower "
        "bound); rounded half up to the cent, never more than the fee.",
        f"A claim can be filed from the day after the {_ordinal(policy.claim_after_working_days)} working day "
        "(mainland China calendar) of the next calendar month up to the "
        f"{_ordinal(policy.claim_window_days)} day after the service month ends.",
    ]
    return (
        '<section><h2>How these figures were computed</h2><ul class="how">'
        + "".join(f"<li>{item}</li>" for item in items)
        + "</ul></section>"
    )


# --- the live index ---------------------------------------------------------------------------------------------


def render_index(
    page: IndexPage,
    live: LiveContext,
    title: str,
    timezone: ZoneInfo | None = None,
    coverage: Coverage | None = None,
) -> str:
    """The live index: one page of apps' running months (availability, target, budget, compensation), each
    linking its page, with the controls that filter, sort and page them (:mod:`stream.statements.index_query`).

    ``timezone`` is the zone the page's time is given in (the SLA's); without it, UTC. ``coverage`` is the
    input's of the running calendar month: its silent periods are said above the figures they flatter.
    """
    rows = []
    for entry in page.entries:
        app = escape(entry.app_id)
        name = f'<a href="{escape(entry.href)}">{app}</a>' if entry.href else app
        a = entry.month
        if a is None:
            rows.append(
                f'<tr><td>{name}</td><td colspan="5">no running service month: no subscription covers today</td></tr>'
            )
            continue
        status = '<span class="badge met">met</span>' if a.meets_sla else '<span class="badge missed">missed</span>'
        compensation = "none" if a.compensation_percent == 0 else f"{a.compensation_percent}%"
        rows.append(
            f'<tr><td>{name}</td><td class="nowrap">{_day(a.first_day)} to {_day(a.last_day)}</td>'
            f'<td class="num">{escape(a.availability_display)}</td><td>{status}</td>'
            f'<td class="num">{a.slots_used} of {a.slots_allowed}</td>'
            f'<td class="num">{compensation}</td></tr>'
        )
    if rows:
        body = (
            '<div class="scroll"><table><thead><tr><th>app</th><th>service month</th><th class="num">availability</th>'
            '<th>target</th><th class="num">budget used of allowed</th><th class="num">compensation</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    elif page.total:
        body = "<p>No app on this page: none matches, or the page is past the last.</p>"
    else:
        body = "<p>No app yet: nothing counted and no terms on record.</p>"
    return "\n".join(
        [
            _head(title, live),
            "<body><main><header>",
            f"<h1>{escape(title)}</h1>",
            _live_banner(live, timezone or ZoneInfo("UTC"), running=False, link=False),
            _index_data_note(coverage, timezone or ZoneInfo("UTC")),
            "</header>",
            f"<section><h2>Running service months</h2>{_index_controls(page)}{body}{_index_pages(page)}"
            '<p class="small">Availability truncated, never rounded up; budget: unavailable slots used of those '
            "the target allows; each app links to its month page.</p></section>",
            "</main></body></html>\n",
        ]
    )


def _index_controls(page: IndexPage) -> str:
    """The form that filters and sorts the index (a GET of ``/``: the query is the page's address)."""
    query = page.query

    def options(name: str, choices: Sequence[tuple[str, str]], chosen: str) -> str:
        return (
            f'<select name="{name}">'
            + "".join(
                f'<option value="{value}"{" selected" if value == chosen else ""}>{label}</option>'
                for value, label in choices
            )
            + "</select>"
        )

    refresh = "" if query.refresh is None else f'<input type="hidden" name="refresh" value="{query.refresh}">'
    shown = f"{page.first:,}–{page.first + len(page.entries) - 1:,} of {page.matched:,}" if page.entries else "none"
    return (
        '<form class="controls" method="get" action="/">'
        f'<label>app id <input type="search" name="q" value="{escape(query.q)}" maxlength="{Q_MAX}"></label> '
        f"<label>status {options('status', [('all', 'all'), ('missed', 'missed'), ('met', 'met')], query.status)}"
        "</label> "
        f"<label>order {options('sort', SORT_LABELS, query.sort)}</label>{refresh} "
        '<button type="submit">show</button></form>'
        f'<p class="small" data-shown="{page.matched}">Showing {shown} matching apps ({page.total:,} in all).</p>'
    )


def _index_pages(page: IndexPage) -> str:
    """Links to the previous and next pages, and the page number (none when one page holds every match)."""
    if page.pages <= 1:
        return ""
    number = page.query.page
    links = [f"page {number:,} of {page.pages:,}"]
    if number > 1:
        links.insert(0, f'<a rel="prev" href="{escape(page.query.href(page=number - 1))}">previous</a>')
    if number < page.pages:
        links.append(f'<a rel="next" href="{escape(page.query.href(page=number + 1))}">next</a>')
    return f'<p class="pages">{" · ".join(links)}</p>'


def _index_data_note(coverage: Coverage | None, tz: ZoneInfo) -> str:
    """The index's warning when the input left silent periods in the running month (empty when it did not)."""
    if coverage is None or coverage.complete:
        return ""
    last = coverage.silent[-1]
    return (
        '<p class="note nodata" data-note="no-data"><b>Incomplete data.</b> No event of any app was read in '
        f"{coverage.silent_minutes:,} minutes of this month ({_count(len(coverage.silent), 'silent period')} of "
        f"{coverage.silent_after_minutes} minutes or more, the last from "
        f"{local_time(last.start_ms, tz):%Y-%m-%d %H:%M}): those minutes read as available below, but nothing was "
        "measured in them.</p>"
    )


# --- small helpers ----------------------------------------------------------------------------------------------


def _day(day: date) -> str:
    return day.isoformat()


def _money(amount: Decimal) -> str:
    return f"{amount:,}"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _plain_percent(value: Fraction) -> str:
    """A fraction as a percentage written exactly when it has at most four decimals, else truncated to four.

    Example:
        >>> _plain_percent(Fraction(999, 1000)), _plain_percent(Fraction(99, 100)), _plain_percent(Fraction(2, 3))
        ('99.9%', '99%', '66.6666%')
    """
    return truncated_decimal(value * 100, 4, trim=True) + "%"


def _fraction_percent(value: Fraction) -> str:
    """An exact fraction and, for reading, its percentage to six decimals (truncated, ``…`` when cut).

    Example:
        >>> _fraction_percent(Fraction(1487, 1488)), _fraction_percent(Fraction(1))
        ('1,487/1,488 (99.932795…%)', '1 (100%)')
    """
    percent = display_percent(value, 6)[:-1].rstrip("0").rstrip(".")
    cut = "" if (value * 100 * 10**6).denominator == 1 else "…"
    exact = f"{value.numerator:,}" if value.denominator == 1 else f"{value.numerator:,}/{value.denominator:,}"
    return f"{exact} ({percent}{cut}%)"
