"""The live index at fleet size: which apps a query shows, in which order, on which page, and the page's controls."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest

from stream.formats import MonthSummary
from stream.statements.index_query import PAGE_SIZE, IndexEntry, IndexQuery, select
from stream.statements.month_page import LiveContext, render_index


def entry(app_id: str, used: int | None, allowed: int = 8) -> IndexEntry:
    """An app whose running month has used ``used`` unavailable slots of ``allowed`` (None: no running month)."""
    if used is None:
        return IndexEntry(app_id, "", None)
    availability = 1 - Fraction(used * 5, 31 * 24 * 60)
    summary = MonthSummary(
        first_day=date(2026, 12, 1),
        last_day=date(2026, 12, 31),
        availability=availability,
        availability_display=f"{float(availability):.4%}",
        meets_sla=used <= allowed,
        unavailable_slots=used,
        exempt_slots=0,
        slots_used=used,
        slots_left=max(allowed - used, 0),
        slots_allowed=allowed,
        compensation_percent=0 if used <= allowed else 10,
    )
    return IndexEntry(app_id, f"/apps/{app_id}/months/2026-12-01", summary)


FLEET = [entry(f"14000{n:05d}", None if n % 1000 == 7 else n % 13) for n in range(10_000)]


def test_the_default_page_shows_the_apps_closest_to_breaching_first() -> None:
    page = select(FLEET, IndexQuery())
    assert (page.matched, page.total, page.pages, len(page.entries)) == (10_000, 10_000, 100, PAGE_SIZE)
    used = [e.month.slots_used for e in page.entries if e.month]
    assert used == sorted(used, reverse=True) and used[0] == 12, "most budget used (least left) first"
    last = select(FLEET, IndexQuery(page=100))
    assert [e.month for e in last.entries[-10:]] == [None] * 10, "apps without a running month come last"


def test_filters_and_pages_compose() -> None:
    missed = select(FLEET, IndexQuery(status="missed", sort="app"))
    assert missed.matched == sum(1 for e in FLEET if e.month and not e.month.meets_sla)
    assert all(e.month and not e.month.meets_sla for e in missed.entries)
    assert [e.app_id for e in missed.entries] == sorted(e.app_id for e in missed.entries)
    one = select(FLEET, IndexQuery(q="1400009999"))
    assert [e.app_id for e in one.entries] == ["1400009999"] and one.first == 1
    past = select(FLEET, IndexQuery(page=500))
    assert past.entries == [] and past.matched == 10_000 and past.first == 0


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("sort=worst", "sort must be one of budget, availability, app"),
        ("status=bad", "status must be one of all, missed, met"),
        ("page=0", "page must be a whole number from 1"),
        ("page=x", "page must be a whole number from 1"),
        ("q=" + "9" * 101, "q (part of an app id) must be at most 100 characters"),
    ],
)
def test_a_query_that_is_not_valid_is_refused_naming_the_parameter(query: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        IndexQuery.parse(query)


def test_the_page_links_its_neighbours_and_keeps_the_query() -> None:
    query = IndexQuery.parse("sort=availability&status=met&q=1400&page=2&refresh=30")
    assert query.href(page=3) == "/?sort=availability&status=met&q=1400&page=3&refresh=30"
    live = LiveContext(refresh_s=30, now_ms=1_796_000_000_000, index_href="/")
    html = render_index(select(FLEET, query), live, "index")
    assert 'rel="prev" href="/?sort=availability&amp;status=met&amp;q=1400&amp;page=1&amp;refresh=30"' not in html
    assert 'href="/?sort=availability&amp;status=met&amp;q=1400&amp;refresh=30"' in html, "page 1 is the default"
    assert 'rel="next" href="/?sort=availability&amp;status=met&amp;q=1400&amp;page=3&amp;refresh=30"' in html
    assert '<option value="availability" selected>' in html and '<option value="met" selected>' in html
    assert 'name="q" value="1400"' in html
    assert html.count("<tr><td>") == PAGE_SIZE
    assert "Showing 101–200 of" in html
