"""The live month page, in a real headless Chromium, while a worker counts an incident (docs/statements.md).

A worker on real Kafka and Redis counts a good slot, then an incident in the
next slot. The page is opened once, with ``?refresh=2``, and never reloaded
by the test: it must show the incident slot counting (open), then turning
unavailable when event time closes it, by its own refreshes. Meanwhile it
asks for nothing but itself, logs no console error, and its figures equal
the ``.json`` statement the same server gives, whose digest is the one
recomputed from the truth (the events the test produced).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import SCREENSHOTS, Watched, chromium
from stream_harness import FLUSH_APP, Deployment, idle_lag_before, recent_slot, slot_traffic

from stream.config import load_settings
from stream.sla.slots import SLOT_MS, local_time

pytest_plugins = ["stream_harness"]

APP = "1400000077"


def cell(page, slot_ms: int, deployment: Deployment):  # noqa: ANN001, ANN201 (Playwright's types)
    start = local_time(slot_ms, deployment.settings.policy.timezone).isoformat()
    return page.locator(f'.slot[data-slot="{start}"]')


def wait_for_verdict(page, slot_ms: int, deployment: Deployment, verdict: str, timeout_s: float = 60) -> None:  # noqa: ANN001
    """Until the page (refreshing itself) shows the slot with ``verdict``; the test never reloads it."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = cell(page, slot_ms, deployment).get_attribute("data-verdict", timeout=2_000)
        except Exception:  # noqa: BLE001 (the page is between two of its refreshes)
            seen = None
        if seen == verdict:
            return
        deployment.check_workers_alive()
        time.sleep(0.5)
    raise AssertionError(f"the live page still shows {seen!r} for the slot, not {verdict!r}")


def get_json(url: str) -> list[dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_live_page_shows_a_slot_turning_bad(stream_deployment: Callable[..., Deployment], tmp_path: Path) -> None:
    good_slot = recent_slot(40, load_settings())
    tz = load_settings().policy.timezone
    if local_time(good_slot + SLOT_MS, tz).month != local_time(good_slot, tz).month:
        good_slot -= 2 * SLOT_MS  # both slots in one month, even just after midnight on the 1st
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(good_slot))  # event time alone closes
    tz = d.settings.policy.timezone
    bad_slot = good_slot + SLOT_MS
    worker = d.start_worker()
    d.wait_ready(worker)
    good = slot_traffic(APP, good_slot, requests=120, successes=120, tag="good")
    incident = slot_traffic(APP, bad_slot, requests=200, successes=150, tag="incident")  # 75%
    d.produce_events(good[0] + good[1], stamped=True)
    d.wait_applied()
    d.wait_settled(still_open=d.flush_stream_time(bad_slot))  # the good slot closes, nothing else opens

    month = local_time(good_slot, tz).strftime("%Y-%m")
    base = f"http://127.0.0.1:{worker.metrics_port}"
    url = f"{base}/apps/{APP}/months/{month}?refresh=2"
    with chromium() as browser:
        watched = Watched(browser)
        page = watched.page
        page.goto(url)
        wait_for_verdict(page, good_slot, d, "ok")
        assert cell(page, bad_slot, d).get_attribute("data-verdict") == "future", "past the watermark: not measured"

        d.produce_events(incident[0] + incident[1], stamped=True)
        d.wait_applied()
        wait_for_verdict(page, bad_slot, d, "open")  # counted, not closed: event time has not passed it

        d.wait_settled(still_open=d.flush_stream_time(bad_slot + SLOT_MS))
        wait_for_verdict(page, bad_slot, d, "unavailable")
        page.goto(url.replace("refresh=2", "refresh=3600"))  # no reload while the page is read
        assert cell(page, bad_slot, d).get_attribute("data-verdict") == "unavailable"
        shot = SCREENSHOTS / "live-month-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the live page: {shot}")

        [statement] = get_json(f"{base}/apps/{APP}/months/{month}.json")
        figures = {
            name: page.locator(f'[data-figure="{name}"]').first.text_content().strip()
            for name in ("availability_display", "unavailable_slots", "requests", "successes", "digest")
        }
        assert figures == {
            "availability_display": statement["availability_display"],
            "unavailable_slots": "1",
            "requests": "320",
            "successes": "270",
            "digest": statement["digest"],
        }
        service_month = f"{statement['service_month']['start']}/{statement['service_month']['end']}"
        truth = "".join(
            f"{APP},{service_month},{local_time(slot, tz).isoformat()},{r},{s},{verdict}\n"
            for slot, r, s, verdict in ((good_slot, 120, 120, "ok"), (bad_slot, 200, 150, "unavailable"))
        )
        assert statement["digest"] == hashlib.sha256(truth.encode()).hexdigest()

        page.goto(f"{base}/?refresh=2")
        index_link = page.locator(f'a[href="/apps/{APP}/months/{statement["service_month"]["start"]}"]')
        index_link.first.wait_for(timeout=30_000)
        page.goto(f"{base}/?refresh=3600")  # no reload while the page is read
        assert FLUSH_APP in page.content(), "the index lists every app the worker has seen"
        # The index's form, as an operator uses it at fleet size: one app found by its id, the refresh kept.
        page.fill('input[name="q"]', APP)
        page.click('button[type="submit"]')
        page.wait_for_url(f"{base}/?q={APP}&status=all&sort=budget&refresh=3600")  # the form's fields, in order
        rows = page.eval_on_selector_all("tbody tr td:first-child", "els => els.map(e => e.textContent)")
        assert rows == [APP], rows
        assert "Showing 1–1 of 1 matching apps (2 in all)" in " ".join(page.text_content("main").split())

    assert not watched.console and not watched.errors, f"the live pages logged {watched.console + watched.errors}"
    outside = [r for r in watched.requests if not r.startswith(base + "/")]
    assert not outside, f"the live pages asked for something else than themselves: {outside}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/apps/{APP}/months/{month}?refresh=1", timeout=10)
    assert refused.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/?sort=worst", timeout=10)
    assert refused.value.code == 400 and b"sort must be one of" in refused.value.read()
