"""Live statements on the real Redis: every slot read back, judged as the offline report judges it, and served.

The live path counts a few slots (duplicates, a success in its request's
earlier slot, a data-quality slot, an incident, one slot left open); the
statement built from Redis must equal the one the offline report builds from
the same events (figures and digest), carry each closed slot's revision and
none for the open one, and be served as JSON, CSV and a page by the live
pages' routes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from live_kit import START_MS, LiveKit

from stream.formats import statement_to_json
from stream.live import web
from stream.live.exemptions import current_exemptions
from stream.live.ledger import assess_live_months, statements_from_store
from stream.live.page_builds import PageBuilders
from stream.live.pages import LivePages, month_href
from stream.live.probes import Probes
from stream.sla.counting import SlotTally, counted_time
from stream.sla.coverage import MinuteMap
from stream.sla.months import calendar_month
from stream.sla.slots import SLOT_MS, local_time
from stream.sla.verdict import SlotCounts
from stream.statements.statement import build_statement

APP = "1400000001"
NOVEMBER = calendar_month(2026, 11)


def events() -> list[tuple[str, str, str, int, int | None]]:
    """``(kind, event_id, request_id, ts, request_ts)`` of the test's traffic, duplicates included."""
    made: list[tuple[str, str, str, int, int | None]] = []
    plan = [(START_MS, 100, 100), (START_MS + SLOT_MS, 100, 60), (START_MS + 3 * SLOT_MS, 50, 50)]
    for slot, requests, successes in plan:
        for i in range(requests):
            made.append(("request", f"r-{slot}-{i}", "", slot + i, None))
        for i in range(successes):
            made.append(("success", f"s-{slot}-{i}", f"r-{slot}-{i}", slot + i + 100, slot + i))
    made += made[:7]  # delivered twice: counted once
    late = START_MS + SLOT_MS + 299_000  # a request at the end of the incident slot succeeding in the next slot
    made.append(("request", "r-late", "", late, None))
    made.append(("success", "s-late", "r-late", late + 2_000, late))
    made += [("success", f"s-orphan-{i}", f"r-gone-{i}", START_MS + 2 * SLOT_MS + i, None) for i in range(3)]
    return made


async def count(kit: LiveKit, made: list[tuple[str, str, str, int, int | None]]) -> None:
    requests = [kit.request(0, event_id, APP, ts) for kind, event_id, _, ts, _ in made if kind == "request"]
    successes = [
        kit.success(1, event_id, request_id, APP, ts, ts if request_ts is None else request_ts)
        for kind, event_id, request_id, ts, request_ts in made
        if kind == "success"
    ]
    await kit.count("request", requests)
    await kit.count("success", successes)


def report_statement(  # noqa: ANN201
    kit: LiveKit, made: list[tuple[str, str, str, int, int | None]], before_ms: int, as_of_ms: int
):
    """The offline report's statement of the events in slots before ``before_ms`` (those the live path closed),
    with the coverage of all the events (closed slots or not), as of ``as_of_ms``."""
    tally = SlotTally(kit.settings.policy.timezone, (0, before_ms))
    for kind, event_id, _, ts, request_ts in made:
        tally.add(kind, APP, event_id, counted_time(ts, ts if kind == "success" and request_ts is None else request_ts))
    s = kit.settings
    covered = MinuteMap(*NOVEMBER.span_ms(s.policy.timezone))
    for _, _, _, ts, _ in made:
        covered.add(ts)
    return build_statement(
        APP,
        NOVEMBER,
        tally.counts(APP),
        s.exemptions,
        s.calendar,
        None,
        s.policy,
        "report",
        covered=covered,
        as_of_ms=as_of_ms,
    )


def test_the_live_statement_equals_the_reports_and_is_served(live) -> None:
    async def steps(kit: LiveKit) -> None:
        made = events()
        await count(kit, made)
        await kit.move_stream_time(START_MS + 3 * SLOT_MS)  # closes the first three slots, not the fourth
        await kit.tick()
        await kit.tick()
        exemptions = await current_exemptions(kit.store, kit.settings)
        [statement] = await statements_from_store(
            kit.store, kit.settings, APP, [NOVEMBER], exemptions, "live", kit.clock.now_ms
        )
        expected = report_statement(kit, made, START_MS + 3 * SLOT_MS, kit.clock.now_ms)
        assert statement.assessment == expected.assessment, "a live statement covers the closed slots"
        assert statement.digest == expected.digest
        assert statement.coverage == expected.coverage, "Redis recorded the minutes the events happened in"
        assert statement.coverage.first_ms == START_MS and statement.running
        assert [(line.slot_ms, line.verdict, line.revision) for line in statement.slots] == [
            (START_MS, "ok", 1),
            (START_MS + SLOT_MS, "unavailable", 1),
            (START_MS + 2 * SLOT_MS, "data-quality", 1),
        ]
        assert [(line.slot_ms, line.counts, line.revision) for line in statement.open_slots] == [
            (START_MS + 3 * SLOT_MS, SlotCounts(50, 50), None)
        ], "the last slot is still open: shown, in no figure"
        [[ledger]] = await assess_live_months(kit.store, kit.settings, [(APP, 2026, 11)], exemptions)
        a = statement.assessment
        assert replace(ledger, requests=a.requests, successes=a.successes) == a, "the ledger judges the same slots"
        assert (ledger.requests, ledger.successes) == (a.requests + 50, a.successes + 50), "its day totals count all"

        pages = LivePages(kit.settings, lambda: None, kit.clock, PageBuilders(in_process=True))
        as_json = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-11.json", "")
        assert as_json is not None and as_json.status == "200 OK"
        # No snapshot (so no watermark): as of the least partition time, where move_stream_time left them all.
        as_of_least_time = report_statement(kit, made, START_MS + 3 * SLOT_MS, START_MS + 3 * SLOT_MS)
        assert json.loads(as_json.body) == [statement_to_json(as_of_least_time)]
        as_csv = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-11-01.csv", "")
        assert as_csv is not None and as_csv.content_type.startswith("text/csv")
        rows = list(csv.DictReader(line for line in io.StringIO(as_csv.body.decode()) if not line.startswith("#")))
        assert [row["revision"] for row in rows] == ["1", "1", "1"], "closed slots only, each with its revision"
        page = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-11", "refresh=5")
        assert page is not None and page.status == "200 OK"
        html = page.body.decode()
        assert '<meta http-equiv="refresh" content="5"' in html
        open_start = local_time(START_MS + 3 * SLOT_MS, kit.settings.policy.timezone).isoformat()
        assert f'data-slot="{open_start}" data-verdict="open"' in html or (
            f'data-verdict="open" data-slot="{open_start}"' in html
        )
        assert statement.digest in html

        refusals = {
            f"/apps/{APP}/months/2026-13": "404 Not Found",
            "/apps/nobody/months/2026-11": "404 Not Found",
        }
        for path, status in refusals.items():
            answered = await asyncio.to_thread(pages.answer, path, "")
            assert answered is not None and answered.status == status, path
        bad_refresh = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-11", "refresh=1")
        assert bad_refresh is not None and bad_refresh.status == "400 Bad Request"
        assert await asyncio.to_thread(pages.answer, "/elsewhere", "") is None
        index = await asyncio.to_thread(pages.answer, "/", "")
        assert index is not None and index.status == "200 OK"

    live(steps, grace_ms=0)


def test_slots_counted_before_coverage_was_kept_are_served_as_incomplete_not_refused(live) -> None:
    """A namespace counted by a version that kept no coverage bitmaps (or whose bitmaps are gone): its months are
    served, their whole span without data, and the October it never read stays a 404."""

    async def steps(kit: LiveKit) -> None:
        await count(kit, events())
        await kit.move_stream_time(START_MS + 4 * SLOT_MS)
        await kit.tick()
        for key in await kit.store.redis.keys(kit.store.keys.prefix + "coverage:*"):
            await kit.store.redis.delete(key)
        pages = LivePages(kit.settings, lambda: None, kit.clock, PageBuilders(in_process=True))
        answered = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-11.json", "")
        assert answered is not None and answered.status == "200 OK"
        [figures] = json.loads(answered.body)
        assert figures["requests"] > 0 and figures["coverage"]["covered_from"] is None
        assert figures["coverage"]["complete"] is False and figures["coverage"]["silent_periods"]
        october = await asyncio.to_thread(pages.answer, f"/apps/{APP}/months/2026-10.json", "")
        assert october is not None and october.status == "404 Not Found"
        assert october.body.decode().startswith("no events of 2026-10 were read by this deployment")

    live(steps, grace_ms=0)


ODD_APP = "a/b%41 é"
"""An app id with a slash, a percent sign, a space and a non-ASCII letter: each must survive the URL."""


def test_the_web_server_routes_an_encoded_app_id_to_that_app(live) -> None:
    async def steps(kit: LiveKit) -> None:
        await kit.count("request", [kit.request(0, f"r-{i}", ODD_APP, START_MS + i) for i in range(3)])
        await kit.count("request", [kit.request(0, "r-other", "aA", START_MS)])
        await kit.move_stream_time(START_MS + SLOT_MS)
        await kit.tick()
        pages = LivePages(kit.settings, lambda: None, kit.clock)
        server = web.serve("127.0.0.1", 0, lambda: b"", pages, Probes(lambda: "counting"))
        base = f"http://127.0.0.1:{server.effective_port}"
        try:
            href = month_href(ODD_APP, "2026-11")
            assert href == "/apps/a%2Fb%2541%20%C3%A9/months/2026-11"
            [figures] = json.loads(await asyncio.to_thread(fetch, base + href + ".json"))
            assert (figures["app_id"], figures["requests"], figures["successes"]) == (ODD_APP, 3, 0)
            assert figures["unavailable_slots"] == 1
            assert "<!doctype html>" in (await asyncio.to_thread(fetch, base + href)).lower()
            for path, status in {
                "/apps/a%FF/months/2026-11": 404,  # not UTF-8
                "/apps/x/months/9999-12": 404,
                "/apps/x/months/2026-02-30": 404,
                f"/apps/{APP}/months/2026-11?refresh=%C2%B2": 400,  # a superscript two is a digit to str.isdigit
                "/metrics/../apps": 404,
            }.items():
                with pytest.raises(urllib.error.HTTPError) as refused:
                    await asyncio.to_thread(fetch, base + path)
                assert refused.value.code == status, path
            assert await asyncio.to_thread(fetch, base + "/metrics") == "", "/metrics is the registry's (empty here)"
        finally:
            server.close()
            pages.builders.close()

    live(steps, grace_ms=0)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode("utf-8")
