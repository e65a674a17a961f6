"""No figure without data, live: a silent hour of input is "no data" on the page, in the JSON and the CSV.

A worker on real Kafka and Redis reads half an hour of traffic, then nothing
for an hour of event time, then ten more minutes, then nothing again. The
statement the live pages serve must name that hour (and the silence since
the last event, up to the watermark) as silent periods, in the JSON, in the
CSV footer and on the month page in Chromium (its cells drawn "no data",
never "no traffic"); a month not begun, a month this deployment never read
and an app nobody knows are 404s naming why.
"""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime

from browser import Watched, chromium
from stream_harness import Deployment, hours_ago, skip_near_a_month_boundary, success_for

from stream.config import load_settings
from stream.events import Event, RequestEvent
from stream.sla.slots import SLOT_MS, local_time, slots_between

pytest_plugins = ["stream_harness"]

APP = "1400000078"
MINUTE_MS = 60_000
TRAFFIC_MINUTES = [*range(0, 30), *range(90, 100)]


def minute_traffic(start_ms: int) -> list[Event]:
    """A request and its success in each minute of :data:`TRAFFIC_MINUTES` after ``start_ms``."""
    events: list[Event] = []
    for minute in TRAFFIC_MINUTES:
        request = RequestEvent(f"r-cov-{minute}", APP, "1", "u", start_ms + minute * MINUTE_MS + 5_000)
        events += [request, success_for(request)]
    return events


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def iso(ts_ms: int, deployment: Deployment) -> str:
    return local_time(ts_ms, deployment.settings.policy.timezone).isoformat()


def test_a_silent_hour_is_no_data_everywhere_the_statement_goes(stream_deployment: Callable[..., Deployment]) -> None:
    skip_near_a_month_boundary(load_settings(), began_within_min=4 * 60)
    start = hours_ago(3)
    d = stream_deployment()
    worker = d.start_worker()
    d.wait_ready(worker)
    d.produce_events(minute_traffic(start), stamped=True)
    d.wait_applied()
    d.wait_settled()  # every slot closed: the event time of the idle partitions follows the clock
    base = f"http://127.0.0.1:{worker.metrics_port}"
    month = local_time(start, d.settings.policy.timezone).strftime("%Y-%m")
    silent_hour = (iso(start + 30 * MINUTE_MS, d), iso(start + 90 * MINUTE_MS, d))

    deadline = time.monotonic() + 90
    while True:  # until the watermark (the partitions idle) passed the silence since the last event
        status, body = fetch(f"{base}/apps/{APP}/months/{month}.json")
        periods = [] if status != 200 else json.loads(body)[0]["coverage"]["silent_periods"]
        if len(periods) >= 3:
            break
        assert time.monotonic() < deadline, f"no silent periods served yet: {status} {body[:500]}"
        d.check_workers_alive()
        time.sleep(1)
    [statement] = json.loads(body)
    coverage = statement["coverage"]
    before, hour, since = coverage["silent_periods"]
    assert before["end"] == coverage["covered_from"] == iso(start, d), "nothing read before the traffic"
    assert (hour["start"], hour["end"], hour["minutes"]) == (*silent_hour, 60)
    assert since["start"] == coverage["covered_until"] == iso(start + 100 * MINUTE_MS, d)
    assert since["end"] == coverage["measured_until"] == statement["as_of"], "silent up to the watermark"
    as_of = datetime.fromisoformat(statement["as_of"]).timestamp()
    assert 0 <= time.time() - as_of < 120, "the watermark follows the clock while the input is idle"
    assert statement["running"] is True and coverage["complete"] is False
    assert statement["requests"] == statement["successes"] == len(TRAFFIC_MINUTES), "every slot closed, all counted"

    status, text = fetch(f"{base}/apps/{APP}/months/{month}.csv")
    assert status == 200
    footer = [line for line in text.splitlines() if line.startswith("#")]
    service_month = f"{statement['service_month']['start']}/{statement['service_month']['end']}"
    assert f"# no data {APP} {service_month} {silent_hour[0]}/{silent_hour[1]} 60 minutes" in footer
    assert any(line.startswith(f"# so far {APP} {service_month} as of ") for line in footer)
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert rows, "the closed slots with traffic are listed"

    tz = d.settings.policy.timezone
    hour_slots = list(slots_between(start + 30 * MINUTE_MS, start + 90 * MINUTE_MS, tz))
    with chromium() as browser:
        watched = Watched(browser)
        page = watched.page
        page.goto(f"{base}/apps/{APP}/months/{month}?refresh=3600")
        verdicts = {
            slot_ms: page.locator(f'.slot[data-slot="{iso(slot_ms, d)}"]').get_attribute("data-verdict")
            for slot_ms in [start - SLOT_MS, *hour_slots, start + 100 * MINUTE_MS]
        }
        assert set(verdicts.values()) == {"no-data"}, verdicts
        assert len(hour_slots) == 12
        note = page.locator('[data-note="no-data"]')
        assert note.is_visible() and "Incomplete data" in note.text_content()
        assert f"{silent_hour[0][:16].replace('T', ' ')} to {silent_hour[1][:16].replace('T', ' ')}" in (
            note.text_content()
        )
        assert page.locator('[data-note="so-far"]').is_visible()
        assert page.locator('[data-figure="coverage_complete"]').text_content() == "false"
        legend = page.locator(".legend").text_content()
        assert "no data" in legend
    assert not watched.console and not watched.errors, f"the page logged {watched.console + watched.errors}"

    refusals = {
        f"/apps/{APP}/months/2099-01": "2099-01 has not begun: it starts 2099-01-01T00:00+08:00",
        f"/apps/{APP}/months/2099-01.json": "2099-01 has not begun",
        f"/apps/{APP}/months/2020-01.csv": "no events of 2020-01 were read by this deployment",
        f"/apps/1499999999/months/{month}.json": "app 1499999999 has no terms on record and no traffic counted",
    }
    for path, said in refusals.items():
        status, body = fetch(base + path)
        assert status == 404 and said in body, (path, status, body)
