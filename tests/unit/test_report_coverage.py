"""`sla-stream report` never lets missing data pass for a clean month (docs/sla.md, "Coverage").

A month not begun, a file without one event of the month, an app nobody
knows: refused with one line, exit 2. Events that leave minutes of the month
without any event: said in the first line, in each statement's ``data:``
line, in the JSON's ``coverage`` (checked against gaps computed here from the
events written), and ``--strict`` exits 3. A month still running is "so far".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from schemas import assert_valid

from stream.events import Event, RequestEvent, SuccessEvent
from stream.sla.slots import local_time, to_epoch_ms

if TYPE_CHECKING:
    from conftest import CliRun

SHANGHAI = ZoneInfo("Asia/Shanghai")
MINUTE_MS = 60_000
APP = "1400000001"
IDLE = "1400000005"  # terms on record, never any traffic
CONFIG = f'[[apps]]\napp_id = "{IDLE}"\n'


def at(text: str) -> int:
    return to_epoch_ms(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI))


def minute_events(first_ms: int, minutes: Iterable[int], app_id: str = APP) -> list[Event]:
    """A request and its success in each given minute after ``first_ms``."""
    events: list[Event] = []
    for minute in minutes:
        ts = first_ms + minute * MINUTE_MS + 7_000
        events.append(RequestEvent(f"r-{ts}", app_id, "42", "u", ts))
        events.append(SuccessEvent(f"s-{ts}", f"r-{ts}", app_id, "42", "u", ts + 300, ts))
    return events


def silent_truth(minutes: set[int], month_minutes: int, at_least: int = 15) -> list[tuple[int, int]]:
    """Runs of at least ``at_least`` minutes of ``range(month_minutes)`` not in ``minutes``, as (first, after)."""
    runs, start = [], None
    for minute in range(month_minutes + 1):
        empty = minute < month_minutes and minute not in minutes
        if empty and start is None:
            start = minute
        if not empty and start is not None:
            if minute - start >= at_least:
                runs.append((start, minute))
            start = None
    return runs


@pytest.fixture
def report(cli: Callable[..., CliRun], write_config: Callable[..., Path]) -> Callable[..., CliRun]:
    config = write_config(CONFIG)

    def run(events: Path, month: str, *extra: str) -> CliRun:
        return cli("report", "--events", events, "--month", month, "--config", config, *extra)

    return run


def test_a_month_not_begun_is_refused_before_any_file_is_read(report: Callable[..., CliRun], tmp_path: Path) -> None:
    run = report(tmp_path / "not-there.jsonl", "2099-01")
    assert run.assert_one_line_error() == "sla-stream: 2099-01 has not begun: it starts 2099-01-01T00:00+08:00"


def test_a_file_without_one_valid_event_of_the_month_is_refused(
    report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    bad = write_events([f"not an event {i}" for i in range(51)])
    run = report(bad, "2019-03")
    assert (run.code, run.out) == (2, "")
    assert "51 bad lines skipped" in run.err
    assert run.err_lines[-1] == f"sla-stream: no events of 2019-03 in {bad}: nothing to report (no figure without data)"
    april = write_events(minute_events(at("2019-04-02T10:00"), range(30)), "april.jsonl")
    assert report(april, "2019-03").err_lines[-1].startswith("sla-stream: no events of 2019-03 in "), "wrong month"


def test_events_that_leave_silent_periods_are_flagged_and_strict_exits_3(
    report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    start = at("2019-03-01T00:00")
    # An hour of traffic on the 10th with a 14-minute gap (not silent) and a 20-minute gap (silent), then nothing.
    written = {m for m in range(9 * 1440 + 600, 9 * 1440 + 660) if not 9 * 1440 + 610 <= m < 9 * 1440 + 624}
    written -= set(range(9 * 1440 + 630, 9 * 1440 + 650))
    events = write_events(minute_events(start, sorted(written)))
    as_json = report(events, "2019-03", "--format", "json")
    assert as_json.code == 0
    statements = {s["app_id"]: s for s in json.loads(as_json.out)}
    assert set(statements) == {APP, IDLE}
    for statement in statements.values():
        assert_valid("month", statement)
        coverage = statement["coverage"]
        silent = [
            (
                (to_epoch_ms(datetime.fromisoformat(p["start"])) - start) // MINUTE_MS,
                (to_epoch_ms(datetime.fromisoformat(p["end"])) - start) // MINUTE_MS,
            )
            for p in coverage["silent_periods"]
        ]
        assert silent == silent_truth(written, 31 * 1440)
        assert len(silent) == 3, "before the hour, its 20-minute gap, after it"
        assert coverage["silent_minutes"] == sum(b - a for a, b in silent) == 31 * 1440 - 60 + 20
        assert coverage["complete"] is False and statement["running"] is False and statement["as_of"] is None
        assert coverage["covered_from"] == local_time(start + min(written) * MINUTE_MS, SHANGHAI).isoformat()
    assert statements[IDLE]["requests"] == 0

    text = report(events, "2019-03", "--format", "text")
    first = text.out.splitlines()[0]
    assert first.startswith("SLA month report 2019-03, INCOMPLETE DATA: no event at all in 44,600 minutes"), first
    assert text.out.count("  data: INCOMPLETE:") == 2
    assert "2019-03-10 10:30 – 10:50      20 min" in text.out
    [idle_row] = [line for line in text.out.splitlines() if line.startswith(IDLE) and "none owed" in line]
    assert idle_row.endswith("(no data in 44,600 min)  (no requests recorded)")
    assert text.out.count("(no requests recorded)") == 2, "the summary row and the statement of the idle app"

    strict = report(events, "2019-03", "--format", "text", "--strict")
    assert strict.code == 3 and strict.out == text.out
    assert strict.err_lines[-1] == "sla-stream: incomplete data: the events leave silent periods in 2019-03 (--strict)"


def test_events_in_every_quarter_hour_make_a_complete_month_and_strict_passes(
    report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    february = range(0, 28 * 1440, 14)  # never 14 minutes without an event: no silent period
    events = write_events(minute_events(at("2019-02-01T00:00"), february))
    run = report(events, "2019-02", "--format", "json", "--strict")
    assert run.code == 0, run.err
    [statement] = [s for s in json.loads(run.out) if s["app_id"] == APP]
    assert statement["coverage"]["complete"] is True and statement["coverage"]["silent_periods"] == []
    assert statement["coverage"]["covered_until"] == "2019-02-28T23:47:00+08:00"
    text = report(events, "2019-02", "--format", "text")
    assert text.out.splitlines()[0] == "SLA month report 2019-02"
    assert "  data: events from 2019-02-01 00:00 to 2019-02-28 23:47; complete" in text.out


def test_a_running_month_is_so_far_and_its_silence_since_the_last_event_counts(
    report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    now = datetime.now(SHANGHAI)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - month_start < timedelta(minutes=40):
        pytest.skip("the month began minutes ago: no room for a silent period after its first events yet")
    events = write_events(minute_events(to_epoch_ms(month_start), range(20)))
    label = f"{month_start:%Y-%m}"
    run = report(events, label, "--format", "json")
    [statement] = [s for s in json.loads(run.out) if s["app_id"] == APP]
    assert statement["running"] is True
    as_of = datetime.fromisoformat(statement["as_of"])
    assert timedelta(0) <= now - as_of < timedelta(minutes=2), "as of the report's clock, to the minute"
    [silence] = statement["coverage"]["silent_periods"]
    assert (silence["start"], silence["end"]) == ((month_start + timedelta(minutes=20)).isoformat(), as_of.isoformat())
    text = report(events, label, "--format", "text")
    assert f"SLA month report {label}, so far, as of {as_of:%Y-%m-%d %H:%M} (Asia/Shanghai)" in text.out


def test_a_service_month_not_begun_is_left_out_and_refused_for_its_app(
    cli: Callable[..., CliRun], write_events: Callable[..., Path], write_config: Callable[..., Path]
) -> None:
    now = datetime.now(SHANGHAI)
    tomorrow = (now + timedelta(days=1)).date()
    if tomorrow.month != now.month or now.hour == 0 and now.minute < 20:
        pytest.skip("a subscription from tomorrow must start inside the running month, after some data")
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    late = "1400000006"
    config = write_config(f'[[apps]]\napp_id = "{late}"\nsubscriptions = [{{ activation = {tomorrow}, months = 1 }}]\n')
    events = write_events(minute_events(to_epoch_ms(month_start), range(10)))
    label = f"{month_start:%Y-%m}"
    run = cli("report", "--events", events, "--month", label, "--config", config, "--format", "json")
    assert run.code == 0, run.err
    assert {s["app_id"] for s in json.loads(run.out)} == {APP}, "no statement for a month not begun"
    assert f"app {late}: its service month from {tomorrow} has not begun: left out" in run.err_lines
    alone = cli("report", "--events", events, "--month", label, "--config", config, "--app", late)
    assert (alone.code, alone.out) == (2, "")
    assert (
        alone.err_lines[-1]
        == f"sla-stream: app {late}: its service month in {label} has not begun: it starts {tomorrow}"
    )
