"""End to end: simulated traffic through one worker equals the truth, in Redis, on the topic and in the ledger.

Three apps, two and a half hours of event time across the end of October
(Asia/Shanghai), with an incident, duplicate deliveries and late successes.
One app has a subscription that cuts its service months at the 17th and
fees; an exemption in the settings file covers part of the incident. The
records (JSON arrays mixed with single-event records) are produced in five
parts; between parts the worker catches up and closes what event time allows,
so later parts bring late successes to closed slots. Idle partitions are kept
from moving stream time (a huge idle lag), so event time alone closes slots;
the last ones close when flush events move every partition's stream time
past them. Then: each slot's counts and verdict in Redis, and the latest
revision of each key on the verdicts topic, equal what the pure core computes
from the generated events; each service month's ledger in Redis equals
``sla-stream report --format json`` over the same events written to a file,
with the same settings file, field for field, for October and November.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from schemas import assert_valid
from stream_harness import (
    FIXED_DATES_RETENTION_DAYS,
    FLUSH_APP,
    SLA_STREAM,
    Deployment,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    idle_lag_before,
    simulated_traffic,
    success_for,
    write_event_file,
)

from stream.config import Settings
from stream.events import Event, RequestEvent, SuccessEvent
from stream.sla.slots import local_date, slot_start_ms, to_epoch_ms
from stream.sla.verdict import SlotCounts, judge_slot

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002", "1400000003")


TERMS = """
[[apps]]
app_id = "1400000002"
subscriptions = [{ activation = 2026-10-17, months = 1 }]
fees = { "2026-10-17" = "700.00", "2026-11-01" = "1200.00" }

[[exemptions]]
app_id = "1400000001"
start = 2026-11-01T00:10:00+08:00
end = 2026-11-01T00:20:00+08:00
clause = "announced-maintenance"
note = "media cluster upgrade"

[replay]
margin_minutes = 0  # records are stamped with their events' time: a replay of November skips most of October
"""


@dataclass
class Run:
    """The deployment after the whole stream, the events it got, and where to write files."""

    d: Deployment
    events: list[Event]
    late: list[SuccessEvent]
    files: Path
    flushed: list[Event]
    """The events that moved stream time past the traffic: in the topics too, so in the report's file."""


@pytest.fixture(scope="module")
def run(tmp_path_factory, kafka_bootstrap, kafka_admin, redis_client) -> Iterator[Run]:
    """One deployment, shared by this module's tests: the traffic, then one late success per incident month."""
    tz = ZoneInfo("Asia/Shanghai")
    start = to_epoch_ms(datetime(2026, 10, 31, 23, 0, tzinfo=tz))
    root = tmp_path_factory.mktemp("end-to-end")
    d = Deployment(
        root / "deployment",
        kafka_bootstrap,
        redis_client,
        kafka_admin,
        grace_seconds=0,
        idle_lag_seconds=idle_lag_before(start),
        retention_days=FIXED_DATES_RETENTION_DAYS,  # October and November 2026 stay replayable
        extra_toml=TERMS,
    )
    try:
        d.create_topics()
        plan, events = simulated_traffic(
            APPS,
            start,
            150,
            incidents=[(50, 90, 0.95, APPS[0]), (40, 50, 0.9, APPS[1])],
            peak_per_minute=150,
            seed=3,
            trough_share=0.5,
            duplicate_rate=0.01,
            late_success_rate=0.05,
        )
        records = batched_records(events, batch=20, single_every=7, stamped=True)
        d.start_worker()
        for part in range(5):
            d.produce(records[part * len(records) // 5 : (part + 1) * len(records) // 5])
            d.wait_applied()
            d.wait_closed_to_watermark()
        flushed_at = plan.end_ms + 3_600_000
        still_open = d.flush_stream_time(flushed_at)
        d.wait_settled(still_open=still_open)

        # Once every slot is closed: a late success for a failed request of an unavailable slot of each
        # incident month, too few to change its verdict; the month's figures must still follow.
        late = late_successes(events, Truth.of(events, d.settings), d.settings)
        d.produce_events(late, stamped=True)
        d.wait_settled(still_open=still_open)
        yield Run(d, events + late, late, root, d.flush_events(flushed_at))
    except BaseException:
        print(d.logs())
        raise
    finally:
        d.close()


def late_successes(events: list[Event], truth: Truth, settings: Settings) -> list[SuccessEvent]:
    """For each (app, local month) with an unavailable slot, a success for one of its failed requests."""
    tz = settings.policy.timezone
    succeeded = {e.request_id for e in events if isinstance(e, SuccessEvent)}
    chosen: dict[tuple[str, str], SuccessEvent] = {}
    for e in events:
        if not isinstance(e, RequestEvent) or e.event_id in succeeded:
            continue
        slot = slot_start_ms(e.ts, tz)
        counts = truth.counts[(e.app_id, slot)]
        if judge_slot(SlotCounts(counts.requests, counts.successes + 1), settings.policy).unavailable:
            chosen.setdefault((e.app_id, local_date(slot, tz).strftime("%Y-%m")), success_for(e, e.ts + 20 * 60_000))
    assert sorted(chosen) == [(APPS[0], "2026-10"), (APPS[0], "2026-11"), (APPS[1], "2026-10")]
    return list(chosen.values())


def test_stream_end_to_end(run):
    d = run.d
    assert_slots_match_truth(d, Truth.of(run.events, d.settings), ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    published = d.read_topic("verdicts")
    assert len(published) > len(d.verdict_keys()), "late successes should have made second revisions"
    for record in published:
        assert_valid("verdict", record.value)  # every revision, against docs/schemas/verdict.schema.json
    slots = d.slots()
    assert sum(s.late_successes for s in slots.values()) > len(run.late), "successes should come after slots closed"
    tz = d.settings.policy.timezone
    for e in run.late:
        assert slots[(e.app_id, slot_start_ms(e.counted_ts, tz))].late_successes >= 1


STATEMENT_ONLY = frozenset({"digest", "running", "as_of", "coverage"})
"""What a statement's JSON has beyond the month ledger's figures (docs/schemas/month.schema.json)."""


def offline_report(run: Run, month: str, form: str = "json") -> str:
    """``sla-stream report`` over every event the topics hold written to a file, with the deployment's settings."""
    events_file = run.files / "events.jsonl"
    if not events_file.exists():
        write_event_file(events_file, run.events + run.flushed)
    report = subprocess.run(
        [*SLA_STREAM, "report", "--events", str(events_file), "--month", month]
        + ["--config", str(run.d.config), "--format", form],
        capture_output=True,
        text=True,
        check=True,
    )
    return report.stdout


def test_stream_end_to_end_month_ledger(run):
    """Each service month's ledger equals ``sla-stream report --format json`` on the same events, field for field."""
    d = run.d
    expected = []
    for month in ("2026-10", "2026-11"):
        expected += [m for m in json.loads(offline_report(run, month)) if m["app_id"] != FLUSH_APP]
    assert [(m["app_id"], m["service_month"]["start"]) for m in expected] == [
        (APPS[0], "2026-10-01"),
        (APPS[1], "2026-10-17"),
        (APPS[2], "2026-10-01"),
        (APPS[0], "2026-11-01"),
        (APPS[1], "2026-11-01"),
        (APPS[2], "2026-11-01"),
    ]
    by_month = {(m["app_id"], m["service_month"]["start"]): m for m in expected}
    assert by_month[(APPS[0], "2026-11-01")]["unavailable_slots"] >= 4, "the incident should count"
    assert by_month[(APPS[0], "2026-11-01")]["exempt_slots"] == 2, "the exemption should cover two slots"
    assert by_month[(APPS[1], "2026-10-17")]["compensation"]["monthly_fee"] == "700.00"

    # The verdict-derived figures first (a plain failure), then every field (the known bug).
    counts_only = ("requests", "successes", "unavailable_periods", "exempt_periods", *STATEMENT_ONLY)
    for month in expected:
        ledger = d.month(month["app_id"], month["service_month"]["start"])
        assert ledger is not None, f"no ledger for {month['app_id']} {month['service_month']}"
        assert_valid("month", ledger)  # docs/schemas/month.schema.json, as the report's JSON below
        assert_valid("month", month)
        where = (month["app_id"], month["service_month"]["start"])
        assert {k: v for k, v in ledger.items() if k not in counts_only} == {
            k: v for k, v in month.items() if k not in counts_only
        }, where
    for month in expected:
        ledger = d.month(month["app_id"], month["service_month"]["start"])
        differing = {
            k: (ledger.get(k), month[k]) for k in month if k not in STATEMENT_ONLY and ledger.get(k) != month[k]
        }
        assert not differing, f"{month['app_id']} {month['service_month']['start']} (ledger, report): {differing}"


def live_page(run: Run, app_id: str, month: str, suffix: str = "") -> str:
    """What the running worker's web server serves at ``/apps/{app}/months/{month}{suffix}``."""
    [worker] = [w for w in run.d.workers if w.alive]
    url = f"http://127.0.0.1:{worker.metrics_port}/apps/{app_id}/months/{month}{suffix}"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read().decode("utf-8")


def test_live_statements_equal_the_report(run):
    """The live month pages' JSON and slot CSV (every slot in Redis) equal ``report``'s on the same events, digest
    included, and the digest recomputed from the CSV's first six columns is the statement's."""
    for month in ("2026-10", "2026-11"):
        expected = json.loads(offline_report(run, month))
        report_csv = offline_report(run, month, "csv")
        for app_id in APPS:
            mine = [m for m in expected if m["app_id"] == app_id]
            live = json.loads(live_page(run, app_id, month, ".json"))
            as_of = {"running", "as_of", "coverage"}  # the live figures are as of the watermark, the report's now
            assert [strip(m, as_of) for m in live] == [strip(m, as_of) for m in mine], (app_id, month)
            for live_month, report_month in zip(live, mine, strict=True):
                coverage = live_month["coverage"]
                assert coverage["silent_periods"] == silent_until(report_month["coverage"], live_month["as_of"])
                assert coverage["covered_from"] == report_month["coverage"]["covered_from"]
            rows = [line for line in report_csv.splitlines() if line.startswith(app_id + ",")]
            live_csv = live_page(run, app_id, month, ".csv")
            assert [line for line in live_csv.splitlines() if line.startswith(app_id + ",")] == [
                re.sub(r",[0-9]*$", f",{revision}", row)
                for row, revision in zip(rows, live_revisions(live_csv), strict=True)
            ], "the live CSV should be the report's but for the revision column"
            for figures in mine:
                span = figures["service_month"]["start"] + "/" + figures["service_month"]["end"]
                listing = "".join(",".join(row.split(",")[:6]) + "\n" for row in rows if row.split(",")[1] == span)
                assert hashlib.sha256(listing.encode()).hexdigest() == figures["digest"], (app_id, span)


def strip(figures: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k not in keys}


def silent_until(coverage: dict[str, Any], as_of: str | None) -> list[dict[str, Any]]:
    """The silent periods of a month's coverage (of a month over) as they read at ``as_of`` (None: the same)."""
    if as_of is None:
        return coverage["silent_periods"]
    until = datetime.fromisoformat(as_of)
    periods = []
    for period in coverage["silent_periods"]:
        start, end = datetime.fromisoformat(period["start"]), min(datetime.fromisoformat(period["end"]), until)
        minutes = int((end - start).total_seconds()) // 60
        if minutes >= coverage["silent_after_minutes"]:
            periods.append({"start": period["start"], "end": end.isoformat(), "minutes": minutes})
    return periods


def live_revisions(csv_text: str) -> list[str]:
    """The revision column of a live slot CSV: every slot of a settled month is closed, so each has one."""
    revisions = [line.rsplit(",", 1)[1] for line in csv_text.splitlines()[1:] if not line.startswith("#")]
    assert all(r.isdigit() and int(r) >= 1 for r in revisions), revisions
    return revisions


def replay(run: Run, month: str, form: str = "json", processes: int = 2) -> tuple[str, int]:
    """``sla-stream replay`` of every app: its stdout, and how many offsets it read."""
    done = run.d.cli("replay", "--month", month, "--format", form, "--processes", str(processes))
    assert done.returncode == 0, done.stderr
    [read] = re.findall(rf"replayed {month} in [0-9.]+ s: ([0-9,]+) offsets", done.stderr)
    return done.stdout, int(read.replace(",", ""))


def test_replay_equals_report_and_ledger_while_live(run):
    """``replay`` from the topics equals ``report`` on the events and the live ledger, twice, leaving live state be.

    The two replays of each month split the partitions across 2 and 3 processes.
    The worker keeps running throughout. Its namespace, verdicts and dead
    letters are the same after two replays of each month as before (but the
    idle reports the worker renews every second and the closer's lease).
    """
    d = run.d
    moving = frozenset({d.keys.idle, d.keys.closer_lease})
    before = d.namespace_snapshot(ignoring=moving)
    published = (len(d.read_topic("verdicts")), len(d.read_topic("dead_letter")))
    total_offsets = sum(offset + 1 for offset in d.produced.values())
    for month in ("2026-10", "2026-11"):
        expected = json.loads(offline_report(run, month))
        assert len(expected) >= 3, expected
        replayed, read = replay(run, month)
        assert json.loads(replayed) == expected, month
        for figures in (f for f in expected if f["app_id"] in APPS):  # the flush's slot stays open live
            ledger = d.month(figures["app_id"], figures["service_month"]["start"])
            assert ledger == {k: v for k, v in figures.items() if k not in STATEMENT_ONLY}
        csv_replayed, _ = replay(run, month, "csv")
        assert csv_replayed == offline_report(run, month, "csv"), "replay's slot CSV should be report's, byte for byte"
        again, read_again = replay(run, month, processes=3)  # the partitions split otherwise
        assert (again, read_again) == (replayed, read), "a second replay should be identical"
        if month == "2026-11":
            assert read < total_offsets, "the records stamped before November should have been skipped"
    text, _ = replay(run, "2026-11", "text")
    assert text == offline_report(run, "2026-11", "text")
    assert d.namespace_snapshot(ignoring=moving) == before
    assert (len(d.read_topic("verdicts")), len(d.read_topic("dead_letter"))) == published
    leftovers = list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*"))
    assert not leftovers, "a replay should remove its namespace"
