"""The HTML month page in a real browser: headless Chromium (Debian's, driven by Playwright) opens it from a file.

A month with two incidents, a data-quality slot and an exempted maintenance
(tests/month_examples.py) is rendered to a file and opened as ``file://``:
no console error or warning, no request but the file itself, every
``data-figure`` equal to the JSON report's, one ``.slot`` cell per slot with
the unavailable and exempt cells exactly the statement's, drawn with their
patterns; usable at a phone's width; printable (print media and a PDF).
Screenshots go to ``.run/screenshots/`` for a person to look at.

Chromium is ``/usr/bin/chromium`` from Debian's ``chromium`` package, which
deploy/packages.sh installs (``make up``, so CI too). Without it the tests
FAIL with that hint: they are never skipped. ``playwright install`` is never
used (it downloads a browser build of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import REPO, SCREENSHOTS, Watched, chromium, say
from month_examples import at, expected_figures, live_statement, october_statement

from stream.statements.listing import slot_start_text
from stream.statements.month_page import LiveContext, render_month_page
from stream.statements.statement import Statement

A4_LANDSCAPE_CONTENT_PX = round((297 - 2 * 10) / 25.4 * 96)
"""The width, in CSS pixels, inside A4 landscape's page with the page's 10 mm margins (@page): 1047."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def statement() -> Statement:
    return october_statement()


@pytest.fixture(scope="module")
def page_file(statement: Statement, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("month-page") / "1400000002-2026-10-01.html"
    path.write_text(render_month_page(statement), encoding="utf-8")
    return path


def test_the_page_in_chromium_matches_the_statement(
    browser: Any, statement: Statement, page_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    watched = Watched(browser, viewport={"width": 1280, "height": 900})
    try:
        page = watched.open(page_file)

        # The figures, element by element, against the JSON report (and the digest).
        shown = page.eval_on_selector_all("[data-figure]", "els => els.map(e => [e.dataset.figure, e.textContent])")
        assert sorted(map(tuple, shown)) == sorted(expected_figures(statement).items())

        # Every slot of October once, and the unavailable and exempt cells exactly the statement's.
        cells = page.eval_on_selector_all(".slot", "els => els.map(e => [e.dataset.slot, e.dataset.verdict])")
        assert len(cells) == 31 * 288 == 8928
        assert len({slot for slot, _ in cells}) == 8928
        tz = statement.policy.timezone
        for verdict in ("unavailable", "exempt", "data-quality"):
            listed = {slot_start_text(line.slot_ms, tz) for line in statement.slots if line.verdict == verdict}
            assert {slot for slot, shown_verdict in cells if shown_verdict == verdict} == listed, verdict
        assert len([1 for _, verdict in cells if verdict == "unavailable"]) == 30

        # Unavailable cells are hatched and exempt cells dotted: their fill is a pattern of the page, not a colour.
        fills = page.evaluate(
            """() => {
                const out = {};
                for (const verdict of ["unavailable", "exempt", "ok"]) {
                    out[verdict] = [...document.querySelectorAll(`.slot[data-verdict="${verdict}"]`)].map(e => {
                        const fill = getComputedStyle(e).fill;
                        const id = (fill.match(/#([\\w-]+)/) || [])[1];
                        const target = id && document.getElementById(id);
                        return [fill, target ? target.tagName : null];
                    });
                }
                return out;
            }"""
        )
        assert fills["unavailable"] and all(
            "url(" in fill and tag == "pattern" for fill, tag in fills["unavailable"]
        ), fills["unavailable"][:3]
        assert fills["exempt"] and all("url(" in fill and tag == "pattern" for fill, tag in fills["exempt"])
        assert {fill for fill, _ in fills["exempt"]}.isdisjoint(fill for fill, _ in fills["unavailable"])
        assert all(tag is None and fill.startswith("rgb(") for fill, tag in fills["ok"])
        # The legend shows the same patterns.
        legend = page.eval_on_selector_all(".legend rect", "els => els.map(e => getComputedStyle(e).fill)")
        assert {fill for fill, _ in fills["unavailable"]} | {fill for fill, _ in fills["exempt"]} <= set(legend)

        # A cell tells its figures on hover (its <title>).
        title = page.text_content('.slot[data-slot="2026-10-14T10:00:00+08:00"] > title')
        assert title.startswith("2026-10-14 10:00–10:05 · ") and title.endswith(" · unavailable")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "month-page.png"
        page.screenshot(path=str(shot), full_page=True)
        say(capsys, f"month page screenshot: {shot.relative_to(REPO)} ({page_file.stat().st_size:,} bytes of HTML)")

        assert watched.errors == []
        assert [line for line in watched.console if line.split(":")[0] in ("error", "warning")] == []
        assert watched.requests == [page_file.as_uri()]
    finally:
        watched.close()


def test_the_page_at_a_phones_width(browser: Any, page_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watched = Watched(
        browser, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    try:
        page = watched.open(page_file)
        widths = page.evaluate(
            """() => {
                const heat = document.querySelector(".heat");
                return {
                    page: document.documentElement.scrollWidth,
                    body: document.body.scrollWidth,
                    viewport: document.documentElement.clientWidth,
                    heatBox: heat.getBoundingClientRect().right,
                    heatInner: heat.scrollWidth,
                    heatShown: heat.clientWidth,
                    widest: Math.max(
                        ...[...document.querySelectorAll("main > *, main section > :not(.heat):not(.scroll)")]
                            .map(e => e.getBoundingClientRect().right)),
                };
            }"""
        )
        assert widths["viewport"] == 390
        assert widths["page"] <= 390 and widths["body"] <= 390, widths  # no sideways scrolling of the page
        assert widths["widest"] <= 390, widths  # no block of text sticks out
        assert widths["heatBox"] <= 390, widths
        assert widths["heatInner"] > widths["heatShown"], widths  # the heatmap scrolls inside its own box
        shot = SCREENSHOTS / "month-page-phone.png"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        say(capsys, f"month page at 390 px: {shot.relative_to(REPO)}")
        assert watched.errors == [] and watched.requests == [page_file.as_uri()]
    finally:
        watched.close()


def test_the_page_prints(browser: Any, page_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watched = Watched(browser, viewport={"width": A4_LANDSCAPE_CONTENT_PX, "height": 740})
    try:
        page = watched.open(page_file)
        page.emulate_media(media="print")
        printed = page.evaluate(
            """() => {
                const cell = document.querySelector('.slot[data-verdict="unavailable"]');
                const svg = document.querySelector(".heat svg");
                return {
                    adjust: getComputedStyle(cell).printColorAdjust || getComputedStyle(cell).webkitPrintColorAdjust,
                    fill: getComputedStyle(cell).fill,
                    heat: svg.getBoundingClientRect().width,
                    page: document.documentElement.scrollWidth,
                };
            }"""
        )
        assert printed["adjust"] == "exact"  # colours and patterns kept on paper
        assert "url(" in printed["fill"]
        assert printed["heat"] <= A4_LANDSCAPE_CONTENT_PX and printed["page"] <= A4_LANDSCAPE_CONTENT_PX, printed
        pdf = page.pdf(path=str(tmp_path / "month.pdf"), prefer_css_page_size=True, print_background=True)
        assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
        kept = SCREENSHOTS / "month-page.pdf"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(pdf)
        say(capsys, f"month page printed (A4 landscape): {kept.relative_to(REPO)}, {len(pdf):,} bytes")
        assert watched.errors == [] and watched.requests == [page_file.as_uri()]
    finally:
        watched.close()


def test_a_live_page_hides_its_banner_in_print_and_links_only_to_the_live_pages(browser: Any, tmp_path: Path) -> None:
    now = at("2026-10-14T10:22")
    path = tmp_path / "live.html"
    path.write_text(render_month_page(live_statement(now), LiveContext(15, now, "/")), encoding="utf-8")
    watched = Watched(browser, viewport={"width": 1280, "height": 900})
    try:
        page = watched.open(path)
        assert page.get_attribute('meta[http-equiv="refresh"]', "content") == "15"
        assert page.is_visible(".live") and "refreshes every 15 s" in page.text_content(".live")
        assert page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))") == ["/"]
        verdicts = page.eval_on_selector_all(".slot", "els => els.map(e => e.dataset.verdict)")
        assert verdicts.count("open") >= 1 and verdicts.count("future") > 0
        outline = page.eval_on_selector('.slot[data-verdict="open"]', "e => getComputedStyle(e).stroke")
        assert outline.startswith("rgb(")  # open slots are outlined
        page.emulate_media(media="print")
        assert not page.is_visible(".live")
        assert watched.errors == [] and watched.requests == [path.as_uri()]
    finally:
        watched.close()
