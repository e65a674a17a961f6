"""The HTML month page: one cell per slot, every figure equal to the JSON report's, escaped, self-contained.

The page is read back with ``html.parser`` as a program auditing it would:
the ``data-figure`` elements against :func:`stream.formats.month_to_json`, the
heatmap's ``rect.slot`` cells against the month's slots (in the SLA's zone,
including days the clocks change). The browser test
(tests/integration/test_month_page_browser.py) checks what Chromium makes of it.
"""

from __future__ import annotations

import functools
import html
import re
from collections import Counter
from datetime import date
from decimal import Decimal
from fractions import Fraction
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from month_examples import (
    APP,
    DATA_QUALITY_SLOT,
    MAINTENANCE,
    OCTOBER,
    SHANGHAI,
    at,
    covered_until,
    expected_figures,
    live_statement,
    october_statement,
    quiet_statement,
)

from stream.formats import month_summary, month_to_json
from stream.sla.claims import WorkingDayCalendar
from stream.sla.coverage import Coverage, MinuteMap
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, calendar_month
from stream.sla.policy import SlaPolicy
from stream.sla.slots import SLOT_MS, day_start_ms, local_time, slots_between
from stream.sla.verdict import SlotCounts
from stream.statements.index_query import IndexEntry, IndexQuery, select
from stream.statements.listing import slot_start_text
from stream.statements.month_page import (
    CELL_VERDICTS,
    LiveContext,
    render_index,
    render_month_page,
)
from stream.statements.statement import Statement, build_statement

BERLIN = ZoneInfo("Europe/Berlin")


class PageReader(HTMLParser):
    """What a program auditing the page reads: its cells, its data-figure texts, every tag and attribute."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[dict[str, str]] = []
        self.figures: dict[str, list[str]] = {}
        self.tags: Counter[str] = Counter()
        self.attributes: list[tuple[str, str, str]] = []
        self.metas: list[dict[str, str]] = []
        self.text: list[str] = []
        self._figure: str | None = None
        self._figure_text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags[tag] += 1
        self.attributes += [(tag, name, value) for name, value in values.items()]
        if tag == "meta":
            self.metas.append(values)
        if tag == "rect" and "slot" in values.get("class", "").split():
            self.cells.append(values)
        if "data-figure" in values:
            assert self._figure is None, "data-figure elements do not nest"
            self._figure, self._figure_text = values["data-figure"], []

    def handle_endtag(self, tag: str) -> None:
        if self._figure is not None:
            self.figures.setdefault(self._figure, []).append("".join(self._figure_text))
            self._figure = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._figure is not None:
            self._figure_text.append(data)


@functools.cache
def october() -> tuple[Statement, str, PageReader]:
    """The example month's statement, its file page and the page read back (built once: a page is 1.8 MB)."""
    statement = october_statement()
    page = render_month_page(statement)
    return statement, page, PageReader(page)


def month_slots(month: ServiceMonth, tz: ZoneInfo) -> list[str]:
    start_ms, end_ms = month.span_ms(tz)
    return [slot_start_text(slot_ms, tz) for slot_ms in slots_between(start_ms, end_ms, tz)]


# --- figures ----------------------------------------------------------------------------------------------------


def test_every_figure_equals_the_json_reports() -> None:
    statement, _, reader = october()
    expected = expected_figures(statement)
    assert set(reader.figures) == set(expected)
    assert {name: texts for name, texts in reader.figures.items()} == {name: [text] for name, text in expected.items()}
    # The example's own figures, as a reader of the README would work them out.
    assert expected["availability_display"] == "99.66%"  # 1 − 150/44,640 = 99.6639…%: truncated
    assert (expected["unavailable_slots"], expected["exempt_slots"], expected["data_quality_slots"]) == (
        "30",
        "12",
        "1",
    )
    assert (expected["meets_sla"], expected["compensation_percent"], expected["voucher"]) == ("false", "10", "100.00")


def test_figures_of_a_month_that_meets_the_target_without_a_fee() -> None:
    statement = quiet_statement(calendar_month(2019, 3), SHANGHAI)
    reader = PageReader(render_month_page(statement))
    figures = {name: texts[0] for name, texts in reader.figures.items()}
    assert figures == expected_figures(statement)
    assert figures["meets_sla"] == "true"
    assert figures["monthly_fee"] == figures["voucher"] == ""  # None: empty
    assert figures["availability_exact"] == "8927/8928"
    assert "fee not on record" in "".join(reader.text)


def test_availability_is_shown_truncated_never_rounded_up() -> None:
    """Nine bad slots in March 2019: 99.899193…% shows as 99.89% everywhere on the page, never 99.90%."""
    ten = day_start_ms(date(2019, 3, 10), SHANGHAI) + 120 * SLOT_MS
    counts = {ten + i * SLOT_MS: SlotCounts(100, 98) for i in range(9)}
    statement = build_statement(
        APP,
        calendar_month(2019, 3),
        counts,
        (),
        WorkingDayCalendar(),
        None,
        SlaPolicy(),
        "report",
        **covered_until(calendar_month(2019, 3), SHANGHAI),
    )
    page = render_month_page(statement)
    assert PageReader(page).figures["availability_display"] == ["99.89%"]
    assert "99.90%" not in page
    assert "1 − 45 / 44,640 minutes" in page


# --- the heatmap ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "tz", "cells"),
    [
        pytest.param(calendar_month(2026, 10), SHANGHAI, 31 * 288, id="31 days"),
        pytest.param(calendar_month(2026, 11), SHANGHAI, 30 * 288, id="30 days"),
        pytest.param(ServiceMonth(date(2026, 10, 17), date(2026, 10, 31)), SHANGHAI, 15 * 288, id="cut mid-month"),
        pytest.param(ServiceMonth(date(2019, 6, 1), date(2019, 6, 16)), SHANGHAI, 16 * 288, id="cut at its end"),
        pytest.param(calendar_month(2026, 3), BERLIN, 30 * 288 + 276, id="Berlin March: a 23-hour day"),
        pytest.param(calendar_month(2026, 10), BERLIN, 30 * 288 + 300, id="Berlin October: a 25-hour day"),
    ],
)
def test_one_cell_per_slot_of_the_service_month(month: ServiceMonth, tz: ZoneInfo, cells: int) -> None:
    statement = quiet_statement(month, tz)
    reader = PageReader(render_month_page(statement))
    starts = [cell["data-slot"] for cell in reader.cells]
    assert len(starts) == cells
    assert starts == month_slots(month, tz)  # every slot once, in time order, with its local offset
    verdicts = Counter(cell["data-verdict"] for cell in reader.cells)
    assert verdicts == {"unavailable": 1, "none": cells - 1}
    assert set(verdicts) <= set(CELL_VERDICTS)
    assert all(cell["class"].startswith("slot ") for cell in reader.cells)


def test_a_day_the_clocks_change_has_its_real_number_of_slots() -> None:
    reader = PageReader(render_month_page(quiet_statement(calendar_month(2026, 3), BERLIN)))
    per_day = Counter(cell["data-slot"][:10] for cell in reader.cells)
    assert per_day["2026-03-29"] == 276  # 02:00–03:00 does not exist that day
    assert {count for day, count in per_day.items() if day != "2026-03-29"} == {288}
    spring = [cell for cell in reader.cells if cell["data-slot"].startswith("2026-03-29")]
    assert spring[23]["data-slot"] == "2026-03-29T01:55:00+01:00"
    assert spring[24]["data-slot"] == "2026-03-29T03:00:00+02:00"
    # The cells keep to the clock: 03:00 sits where 03:00 sits on every other day, leaving the skipped hour empty.
    march_28 = {
        cell["data-slot"][11:16]: cell["x"] for cell in reader.cells if cell["data-slot"].startswith("2026-03-28")
    }
    assert spring[24]["x"] == march_28["03:00"]


def test_the_25_hour_day_lists_the_repeated_hour_twice_with_its_offsets() -> None:
    reader = PageReader(render_month_page(quiet_statement(calendar_month(2026, 10), BERLIN)))
    autumn = [cell["data-slot"] for cell in reader.cells if cell["data-slot"].startswith("2026-10-25")]
    assert len(autumn) == 300
    assert autumn.count("2026-10-25T02:00:00+02:00") == autumn.count("2026-10-25T02:00:00+01:00") == 1


def test_cells_carry_each_slots_verdict_and_figures() -> None:
    statement, page, reader = october()
    by_start = {cell["data-slot"]: cell for cell in reader.cells}
    tz = statement.policy.timezone
    for line in statement.slots:
        assert by_start[slot_start_text(line.slot_ms, tz)]["data-verdict"] == line.verdict
    traffic = {slot_start_text(line.slot_ms, tz) for line in statement.slots}
    assert all(cell["data-verdict"] == "none" for start, cell in by_start.items() if start not in traffic)
    # Colour bands: the incident at 90% is the darkest, the one at 98% the lighter hatched band.
    assert by_start["2026-10-14T10:00:00+08:00"]["class"] == "slot v"
    assert by_start["2026-10-21T20:00:00+08:00"]["class"] == "slot l"
    assert by_start["2026-10-27T02:00:00+08:00"]["class"] == "slot x"
    assert by_start[slot_start_text(DATA_QUALITY_SLOT, tz)]["data-verdict"] == "data-quality"
    line = next(line for line in statement.slots if line.slot_ms == at("2026-10-14T10:00"))
    title = (
        f"2026-10-14 10:00–10:05 · {line.counts.requests:,} requests · {line.counts.successes:,} successes · "
        f"{'89.' if line.success_rate < Fraction(90, 100) else '90.'}"
    )
    assert f"<title>{title}" in page
    assert "· exempt: announced-maintenance</title>" in page


def test_a_full_month_page_stays_under_two_megabytes() -> None:
    size = len(october()[1].encode("utf-8"))
    assert size < 2_000_000, size


# --- escaping, self-containment ---------------------------------------------------------------------------------

HOSTILE_APP = '<script>alert("app")</script>&amp;\'"'
HOSTILE_NOTE = '</title></rect></svg><img src="x" onerror="alert(1)"><a href="https://evil.example/">x</a>'


def hostile_statement() -> Statement:
    ten = day_start_ms(date(2026, 10, 14), SHANGHAI) + 120 * SLOT_MS
    exemption = Exemption(ten, ten + SLOT_MS, HOSTILE_APP, "attack", HOSTILE_NOTE)
    counts = {ten: SlotCounts(100, 10), ten + SLOT_MS: SlotCounts(100, 10)}
    return build_statement(
        HOSTILE_APP,
        OCTOBER,
        counts,
        (exemption,),
        WorkingDayCalendar(),
        None,
        SlaPolicy(),
        "report",
        **covered_until(OCTOBER, SHANGHAI),
    )


def test_app_ids_and_notes_are_escaped() -> None:
    statement = hostile_statement()
    assert [line.verdict for line in statement.slots] == ["exempt", "unavailable"]
    page = render_month_page(statement)
    reader = PageReader(page)
    assert HOSTILE_APP not in page and HOSTILE_NOTE not in page
    assert "<script" not in page and "<img" not in page and 'evil.example/"' not in page
    assert reader.tags["script"] == reader.tags["img"] == reader.tags["a"] == 0
    text = "".join(reader.text)
    assert HOSTILE_APP in text  # shown as text, exactly
    assert HOSTILE_NOTE in text
    assert not [attr for attr in reader.attributes if attr[1].startswith("on")]
    assert len(reader.cells) == 31 * 288  # the note did not close the heatmap early


def test_a_file_page_names_no_url_at_all() -> None:
    for page in (october()[1], render_month_page(hostile_statement())):
        reader = PageReader(page)
        # A note is free text and may hold a URL: shown as text (escaped), it links to nothing.
        assert not re.search(r"https?:|//", page.replace(html.escape(HOSTILE_NOTE), "")), "a URL"
        linked = [(tag, name, value) for tag, name, value in reader.attributes if name in ("href", "src", "xmlns")]
        assert linked == []
        assert re.findall(r"url\(([^)]*)\)", page) and all(
            ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page)
        )
        assert "@import" not in page and reader.tags["link"] == reader.tags["script"] == 0
        assert not [meta for meta in reader.metas if meta.get("http-equiv")]  # no refresh in a file


def test_the_page_is_a_complete_utf8_document_for_phones() -> None:
    page = october()[1]
    assert page.startswith('<!doctype html>\n<html lang="en">')
    reader = october()[2]
    assert {"charset": "utf-8"} in reader.metas
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in reader.metas
    assert "@media print" in page and "print-color-adjust:exact" in page
    assert re.search(r'<svg viewBox="0 0 \d+ \d+"', page)


# --- live -------------------------------------------------------------------------------------------------------


def test_a_live_page_refreshes_and_marks_open_and_future_slots() -> None:
    now = at("2026-10-14T10:22")
    statement = live_statement(now)
    live = LiveContext(refresh_s=15, now_ms=now, index_href="/")
    page = render_month_page(statement, live)
    reader = PageReader(page)
    assert {"http-equiv": "refresh", "content": "15"} in reader.metas
    assert "as of <b>2026-10-14 10:22:00</b>" in page and "refreshes every 15 s" in page
    assert ("a", "href", "/") in reader.attributes
    verdicts = {cell["data-slot"]: cell["data-verdict"] for cell in reader.cells}
    assert verdicts["2026-10-14T10:20:00+08:00"] == "open"  # traffic, closes at 10:27
    assert verdicts["2026-10-14T10:15:00+08:00"] == "unavailable"  # closed at 10:22 (grace 2 minutes)
    assert verdicts["2026-10-14T10:25:00+08:00"] == "future"
    open_starts = {slot_start_text(line.slot_ms, SHANGHAI) for line in statement.slots if line.revision is None}
    assert {start for start, verdict in verdicts.items() if verdict == "open"} == open_starts
    future = [start for start, verdict in verdicts.items() if verdict == "future"]
    assert len(future) == (OCTOBER.span_ms(SHANGHAI)[1] - at("2026-10-14T10:25")) // SLOT_MS
    assert all(cell["class"].split()[-1] == "o" for cell in reader.cells if cell["data-verdict"] == "open")


def test_a_file_page_has_no_open_cells_and_future_ones_only_while_the_month_runs() -> None:
    running = live_statement(at("2026-10-14T10:22"))
    verdicts = Counter(cell["data-verdict"] for cell in PageReader(render_month_page(running)).cells)
    assert "open" not in verdicts
    assert verdicts["future"] == 8928 - (13 * 288 + 10 * 12 + 5), "after 10:20 on the 14th (open): not measured yet"
    over = {cell["data-verdict"] for cell in PageReader(render_month_page(october_statement())).cells}
    assert "open" not in over and "future" not in over


def test_the_index_lists_each_app_with_its_running_month() -> None:
    summary = month_summary(month_to_json(october()[0].assessment, SHANGHAI))
    live = LiveContext(refresh_s=30, now_ms=at("2026-10-14T10:22"), index_href="/")
    page = render_index(
        select(
            [IndexEntry(APP, "/apps/1400000002/months/2026-10-01", summary), IndexEntry(HOSTILE_APP, "", None)],
            IndexQuery(),
        ),
        live,
        "every app's <running> month",
        timezone=SHANGHAI,
    )
    reader = PageReader(page)
    text = " ".join(" ".join(reader.text).split())
    assert {"http-equiv": "refresh", "content": "30"} in reader.metas
    assert ("a", "href", "/apps/1400000002/months/2026-10-01") in reader.attributes
    assert "99.66%" in text and "missed" in text and "30 of 8" in text and "10%" in text
    assert "no running service month" in text and HOSTILE_APP in text and HOSTILE_APP not in page
    assert "every app's <running> month" in text
    assert "2026-10-14 10:22:00" in text
    assert 'data-note="no-data"' not in page, "no coverage given: nothing claimed"


def test_the_index_says_when_the_input_left_silent_periods() -> None:
    start, end = OCTOBER.span_ms(SHANGHAI)
    covered = MinuteMap(start, end)
    covered.add_minutes(range(start // 60_000, at("2026-10-14T09:40") // 60_000))  # then nothing until 10:22
    live = LiveContext(refresh_s=30, now_ms=at("2026-10-14T10:22"), index_href="/")
    silent = Coverage.measure(covered, start, end, at("2026-10-14T10:22"), 15)
    whole = Coverage.measure(covered, start, end, at("2026-10-14T09:50"), 15)
    summary = month_summary(month_to_json(october()[0].assessment, SHANGHAI))
    pages = [
        PageReader(
            render_index(select([IndexEntry(APP, "", summary)], IndexQuery()), live, "index", SHANGHAI, coverage)
        )
        for coverage in (silent, whole)
    ]
    notes = [" ".join(" ".join(page.text).split()) for page in pages]
    assert "No event of any app was read in 42 minutes of this month" in notes[0]
    assert "the last from 2026-10-14 09:40" in notes[0]
    assert "Incomplete data" not in notes[1], "a 10-minute gap is no silent period"


def test_an_exempt_period_lists_its_clause_and_note() -> None:
    page = october()[1]
    assert "media cluster upgrade" in page and "maintenance announced in advance" in page
    assert '<td class="nowrap">2026-10-27 02:00</td><td class="nowrap">03:00</td>' in page
    assert MAINTENANCE.clause in page


def test_tiers_and_thresholds_are_read_from_the_policy() -> None:
    from stream.sla.policy import CompensationTier

    policy = SlaPolicy(
        slot_success_min=Fraction(95, 100),
        availability_target=Fraction(995, 1000),
        compensation_tiers=(CompensationTier(Fraction(995, 1000), 25), CompensationTier(Fraction(98, 100), 100)),
    )
    statement = build_statement(
        APP,
        OCTOBER,
        {},
        (),
        WorkingDayCalendar(),
        Decimal("10.00"),
        policy,
        "replay",
        **covered_until(OCTOBER, policy.timezone),
    )
    page = render_month_page(statement)
    assert "below 99.5%: 25%; below 98%: 100%" in page
    assert "below 95% (exactly 95% is fine)" in page
    assert "availability of at least 99.5%" in page
    assert "unavailable, under 95% (hatched)" in page and "unavailable, 95% to under" not in page
    assert "ok, 95% to under 99.9%" in page
    assert "replay of the Kafka topics" in page
    assert local_time(OCTOBER.span_ms(SHANGHAI)[0], SHANGHAI).isoformat() in page
