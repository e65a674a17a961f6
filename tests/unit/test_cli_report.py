"""`sla-stream report` end to end: event files and a config written here, JSON and text read back.

Expected figures come from the agreement (docs/sla.md) and from how the events were built
(slot by slot), never from the code under test.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stream.events import Event, RequestEvent, SuccessEvent, to_line

if TYPE_CHECKING:
    from conftest import CliRun

APP = "1400000001"  # the app with incidents, a fee and an exemption
OTHER = "1400000002"  # clean traffic, no terms on record
RENEWED = "1400000003"  # two subscriptions meeting in March
LATE = "1400000004"  # subscribed from 17 March only
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

REQUIRED_KEYS = {
    "app_id",
    "service_month",
    "timezone",
    "total_minutes",
    "requests",
    "successes",
    "unavailable_slots",
    "unavailable_minutes",
    "exempt_slots",
    "availability",
    "availability_display",
    "meets_sla",
    "error_budget",
    "compensation",
    "claim_window",
    "unavailable_periods",
    "exempt_periods",
}
NESTED_KEYS = {
    "service_month": {"start", "end", "days"},
    "error_budget": {"slots_allowed", "slots_used", "slots_left"},
    "compensation": {"percent", "monthly_fee", "voucher"},
    "claim_window": {"opens", "closes", "estimated"},
}
PERIOD_KEYS = {"start", "end", "slots", "lowest_success_rate"}

CONFIG = f"""
[[apps]]
app_id = "{APP}"
fees = {{ "2019-03-01" = "1200.00" }}

[[apps]]
app_id = "{RENEWED}"
subscriptions = [{{ activation = 2019-03-17, months = 1 }}, {{ activation = 2019-01-17, months = 2 }}]
fees = {{ "2019-03-01" = "300.00", "2019-03-17" = "500.00" }}

[[apps]]
app_id = "{LATE}"
subscriptions = [{{ activation = 2019-03-17, months = 1 }}]

[[exemptions]]
app_id = "{APP}"
start = 2019-03-20T03:00:00
end = 2019-03-20T03:12:00
clause = "announced-maintenance"
note = "media cluster upgrade"
"""


def at(text: str) -> int:
    """Exact epoch ms of an ISO time with offset."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


def slot(app_id: str, start: str, requests: int, successes: int) -> list[Event]:
    """One slot's traffic: ``requests`` requests a second apart from ``start``, the first ``successes`` succeed."""
    first = at(start)
    events: list[Event] = []
    for i in range(requests):
        ts = first + 1000 * i
        request_id = f"r-{app_id}-{ts}"
        events.append(RequestEvent(request_id, app_id, "42", f"u{i}", ts))
        if i < successes:
            events.append(SuccessEvent(f"s-{app_id}-{ts}", request_id, app_id, "42", f"u{i}", ts + 400, ts))
    return events


def slots(app_id: str, day: str, times: Iterable[str], requests: int, successes: int) -> list[Event]:
    return [e for t in times for e in slot(app_id, f"{day}T{t}:00+08:00", requests, successes)]


# March 2019 for APP: 9 unavailable slots (the spec's 99.8992% month), 3 more inside the exemption.
INCIDENT_1 = [
    *slots(APP, "2019-03-10", ["10:00", "10:05"], 100, 98),
    *slot(APP, "2019-03-10T10:10:00+08:00", 100, 90),
    *slots(APP, "2019-03-10", ["10:15", "10:20", "10:25"], 100, 98),
]
INCIDENT_2 = [
    *slots(APP, "2019-03-12", ["14:00", "14:05", "14:15"], 100, 95),
    *slots(APP, "2019-03-12", ["14:10"], 100, 100),
]
MAINTENANCE = slots(APP, "2019-03-20", ["03:00", "03:05", "03:10"], 100, 50)
GOOD = [
    *slots(APP, "2019-03-10", ["09:55", "10:30"], 100, 100),
    *slots(APP, "2019-03-01", ["00:00"], 200, 199),
    *slots(APP, "2019-03-31", ["23:55"], 100, 99),
]
OTHER_TRAFFIC = [
    *slots(OTHER, "2019-03-10", ["10:00", "10:05", "10:10"], 100, 100),
    *slots(OTHER, "2019-03-15", ["12:00"], 50, 50),
]
APRIL = slots(APP, "2019-04-01", ["00:00"], 100, 0)  # outside the month: not counted
MARCH = INCIDENT_1 + INCIDENT_2 + MAINTENANCE + GOOD + OTHER_TRAFFIC


def totals(events: Iterable[Event], app_id: str) -> tuple[int, int]:
    distinct = {(e.kind, e.event_id) for e in events if e.app_id == app_id}
    return sum(1 for k, _ in distinct if k == "request"), sum(1 for k, _ in distinct if k == "success")


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    return write_config(CONFIG)


@pytest.fixture
def march_events(write_events: Callable[..., Path]) -> Path:
    """March's events in arrival order, with the first incident and a good slot delivered twice."""
    return write_events(MARCH + INCIDENT_1 + GOOD[:200] + APRIL)


@pytest.fixture
def run_report(cli: Callable[..., CliRun], config: Path) -> Callable[..., CliRun]:
    """``report`` over event files for a month, with the module's config unless another is given."""

    def run(
        *files: Path, month: str = "2019-03", fmt: str = "json", settings: Path | None = None, extra: Iterable[str] = ()
    ) -> CliRun:
        argv: list[str | Path] = ["report", "--month", month, "--config", settings or config, "--format", fmt, *extra]
        for path in files:
            argv += ["--events", path]
        return cli(*argv)

    return run


@pytest.fixture
def report(run_report: Callable[..., CliRun]) -> Callable[..., dict[str, Any]]:
    """The JSON report keyed by app (a list where an app has several service months)."""

    def run(*files: Path, **options: Any) -> dict[str, Any]:
        result = run_report(*files, **options)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        by_app: dict[str, Any] = {}
        for month_json in json.loads(result.out):
            by_app.setdefault(month_json["app_id"], []).append(month_json)
        return {app: months[0] if len(months) == 1 else months for app, months in by_app.items()}

    return run


def test_json_has_every_documented_key(report: Callable[..., dict[str, Any]], march_events: Path) -> None:
    results = report(march_events)
    assert set(results) == {APP, OTHER, RENEWED, LATE}
    for app_id in (APP, OTHER):
        month = results[app_id]
        assert REQUIRED_KEYS <= set(month), REQUIRED_KEYS - set(month)
        for key, nested in NESTED_KEYS.items():
            assert nested <= set(month[key]), (key, nested - set(month[key]))
        for period in month["unavailable_periods"] + month["exempt_periods"]:
            assert PERIOD_KEYS <= set(period)
        for period in month["exempt_periods"]:
            assert "clause" in period
        assert isinstance(month["availability"], float)
        assert isinstance(month["meets_sla"], bool)


def test_a_month_with_known_incidents(report: Callable[..., dict[str, Any]], march_events: Path) -> None:
    month = report(march_events)[APP]
    exact = 1 - Fraction(9 * 5, 31 * 24 * 60)  # 99.8992%
    requests, successes = totals(MARCH, APP)
    assert month["service_month"] == {"start": "2019-03-01", "end": "2019-03-31", "days": 31}
    assert month["timezone"] == "Asia/Shanghai"
    assert month["total_minutes"] == 44_640
    assert (month["requests"], month["successes"]) == (requests, successes)
    assert (month["unavailable_slots"], month["unavailable_minutes"], month["exempt_slots"]) == (9, 45, 3)
    assert month["availability"] == pytest.approx(float(exact), abs=1e-12)
    assert month["availability_display"] == "99.89%"  # truncated, never 99.90%
    assert month["meets_sla"] is False
    assert month["error_budget"] == {"slots_allowed": 8, "slots_used": 9, "slots_left": 0}
    assert month["compensation"] == {"percent": 10, "monthly_fee": "1200.00", "voucher": "120.00"}
    assert month["claim_window"] == {"opens": "2019-04-09", "closes": "2019-05-30", "estimated": False}


def test_unavailable_periods_are_merged_and_shown_on_the_sla_clock(
    report: Callable[..., dict[str, Any]], march_events: Path
) -> None:
    periods = [{k: p[k] for k in PERIOD_KEYS} for p in report(march_events)[APP]["unavailable_periods"]]
    assert periods == [
        {
            "start": "2019-03-10T10:00:00+08:00",
            "end": "2019-03-10T10:30:00+08:00",
            "slots": 6,
            "lowest_success_rate": 0.9,
        },
        {
            "start": "2019-03-12T14:00:00+08:00",
            "end": "2019-03-12T14:10:00+08:00",
            "slots": 2,
            "lowest_success_rate": 0.95,
        },
        {
            "start": "2019-03-12T14:15:00+08:00",
            "end": "2019-03-12T14:20:00+08:00",
            "slots": 1,
            "lowest_success_rate": 0.95,
        },
    ]


def test_exempt_slots_are_listed_with_their_clause(report: Callable[..., dict[str, Any]], march_events: Path) -> None:
    month = report(march_events)[APP]
    assert month["exempt_slots"] == 3
    [period] = month["exempt_periods"]
    assert {k: period[k] for k in (*PERIOD_KEYS, "clause")} == {
        "start": "2019-03-20T03:00:00+08:00",  # 03:10 slot is touched by the window ending 03:12
        "end": "2019-03-20T03:15:00+08:00",
        "slots": 3,
        "lowest_success_rate": 0.5,
        "clause": "announced-maintenance",
    }


def test_an_app_without_terms_gets_the_whole_calendar_month_and_no_fee(
    report: Callable[..., dict[str, Any]], march_events: Path, write_events: Callable[..., Path]
) -> None:
    month = report(march_events)[OTHER]
    requests, successes = totals(MARCH, OTHER)
    assert month["service_month"] == {"start": "2019-03-01", "end": "2019-03-31", "days": 31}
    assert (month["requests"], month["successes"], month["unavailable_slots"]) == (requests, successes, 0)
    assert month["availability_display"] == "100.00%" and month["meets_sla"] is True
    assert month["compensation"] == {"percent": 0, "monthly_fee": None, "voucher": None}
    february = report(write_events(slots(OTHER, "2019-02-14", ["12:00"], 10, 10), "feb.jsonl"), month="2019-02")[OTHER]
    assert february["service_month"] == {"start": "2019-02-01", "end": "2019-02-28", "days": 28}
    assert february["total_minutes"] == 28 * 24 * 60


def test_duplicate_deliveries_are_counted_once(
    run_report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    once = write_events(MARCH, "once.jsonl")
    thrice = write_events(MARCH + INCIDENT_1 + list(reversed(MARCH)), "thrice.jsonl")
    first, again = run_report(once), run_report(thrice)
    assert first.code == again.code == 0
    assert again.out == first.out
    assert again.err_lines[-1].startswith(f"0 bad lines skipped, {len(MARCH) + len(INCIDENT_1)} duplicate")
    assert run_report(once, once).out == first.out  # the same file given twice


def test_a_success_counts_in_its_requests_slot(
    report: Callable[..., dict[str, Any]], write_events: Callable[..., Path]
) -> None:
    request_ts, success_ts = at("2019-03-05T08:04:59.900+08:00"), at("2019-03-05T08:05:00.300+08:00")
    request = RequestEvent("r-edge", OTHER, "7", "u7", request_ts)
    counted_at_request = report(
        write_events([request, SuccessEvent("s-edge", "r-edge", OTHER, "7", "u7", success_ts, request_ts)])
    )
    assert counted_at_request[OTHER]["unavailable_slots"] == 0
    assert counted_at_request[OTHER]["data_quality_slots"] == 0
    # Without request_ts the success counts at its own time: the request's slot loses it.
    counted_at_own_time = report(
        write_events([request, SuccessEvent("s-edge", "r-edge", OTHER, "7", "u7", success_ts)], "own.jsonl")
    )
    assert counted_at_own_time[OTHER]["unavailable_slots"] == 1
    assert counted_at_own_time[OTHER]["unavailable_periods"][0]["start"] == "2019-03-05T08:00:00+08:00"


def test_bad_lines_are_reported_and_the_lines_around_them_counted(
    run_report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    good = slot(OTHER, "2019-03-15T12:00:00+08:00", 3, 3)
    path = write_events([good[0], "not json", good[1], '{"type": "request"}', "", good[2], "[1, 2]", *good[3:]])
    late = slot(OTHER, "2019-03-15T12:05:00+08:00", 1, 1)
    with path.open("ab") as handle:  # line 11 is not UTF-8; lines 12 and 13 are good again
        handle.write(
            b'{"type": "request", "event_id": "\xff\xfe"}\n' + "".join(to_line(e) + "\n" for e in late).encode()
        )
    second = write_events(slot(OTHER, "2019-03-16T12:00:00+08:00", 2, 2), "second.jsonl")
    run = run_report(path, second)
    assert run.code == 0
    skipped = [line for line in run.err_lines if f"{path}:" in line]
    assert len(skipped) == 4
    assert f"{path}:2: not valid JSON" in skipped[0]
    assert f"{path}:4: missing field 'event_id'" in skipped[1]
    assert f"{path}:7: " in skipped[2] and "object" in skipped[2]
    assert f"{path}:11: " in skipped[3] and "UTF-8" in skipped[3]
    assert run.err_lines[-1].startswith("4 bad lines skipped")
    [other] = [m for m in json.loads(run.out) if m["app_id"] == OTHER]
    assert (other["requests"], other["successes"]) == (6, 6)


def test_a_line_with_a_huge_number_is_skipped_not_fatal(
    run_report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    good = slot(OTHER, "2019-03-15T12:00:00+08:00", 2, 2)
    huge = '{"type": "request", "event_id": "r-x", "app_id": "1", "room_id": "1", "user_id": "u", "ts": 1' + "0" * 5000
    path = write_events([good[0], huge + "}", *good[1:]])
    run = run_report(path)
    assert run.code == 0 and "Traceback" not in run.err
    assert any(line.startswith(f"skipped {path}:2: ") for line in run.err_lines)
    [other] = [m for m in json.loads(run.out) if m["app_id"] == OTHER]
    assert other["requests"] == 2


def test_app_filters_the_report(report: Callable[..., dict[str, Any]], march_events: Path) -> None:
    assert set(report(march_events, extra=("--app", OTHER))) == {OTHER}
    assert set(report(march_events, extra=("--app", APP))) == {APP}


def test_events_outside_the_month_are_counted_as_such_not_as_traffic(
    run_report: Callable[..., CliRun], march_events: Path
) -> None:
    run = run_report(march_events)
    april_events = len({e.event_id for e in APRIL})
    assert run.err_lines[-1].endswith(f"{april_events} events outside 2019-03 not counted")


def test_an_unknown_app_is_refused_not_reported_at_100_percent(
    run_report: Callable[..., CliRun], march_events: Path
) -> None:
    run = run_report(march_events, extra=("--app", "1499999999"))
    assert (run.code, run.out) == (2, "")
    assert run.err_lines[-1] == (
        "sla-stream: unknown app 1499999999: no events of it in 2019-03 and no terms on record"
    )


def test_a_renewal_puts_two_service_months_in_one_calendar_month(
    report: Callable[..., dict[str, Any]], write_events: Callable[..., Path]
) -> None:
    events = [
        *slot(RENEWED, "2019-03-16T23:55:00+08:00", 100, 90),
        *slot(RENEWED, "2019-03-17T00:00:00+08:00", 100, 100),
        *slot(RENEWED, "2019-03-20T12:00:00+08:00", 100, 0),
        *slot(RENEWED, "2019-03-20T12:05:00+08:00", 100, 0),
    ]
    first, second = report(write_events(events))[RENEWED]
    assert first["service_month"] == {"start": "2019-03-01", "end": "2019-03-16", "days": 16}
    assert second["service_month"] == {"start": "2019-03-17", "end": "2019-03-31", "days": 15}
    assert (first["total_minutes"], second["total_minutes"]) == (16 * 1440, 15 * 1440)
    assert (first["requests"], second["requests"]) == (100, 300)
    assert (first["unavailable_slots"], second["unavailable_slots"]) == (1, 2)
    assert second["error_budget"] == {"slots_allowed": 4, "slots_used": 2, "slots_left": 2}  # 15 days: 4 (§4)
    assert first["compensation"]["monthly_fee"] == "300.00"
    assert second["compensation"]["monthly_fee"] == "500.00"
    assert first["claim_window"] == {"opens": "2019-04-09", "closes": "2019-05-15", "estimated": False}


def test_traffic_before_a_subscription_is_not_measured_and_is_warned_about(
    run_report: Callable[..., CliRun], write_events: Callable[..., Path]
) -> None:
    before = slots(LATE, "2019-03-10", ["10:00", "10:05"], 10, 0)
    during = slot(LATE, "2019-03-17T10:00:00+08:00", 10, 10)
    run = run_report(write_events(before + during))
    assert run.code == 0
    [late] = [m for m in json.loads(run.out) if m["app_id"] == LATE]
    assert late["service_month"] == {"start": "2019-03-17", "end": "2019-03-31", "days": 15}
    assert (late["requests"], late["unavailable_slots"]) == (10, 0)
    warnings = [line for line in run.err_lines if "warning" in line]
    assert len(warnings) == 1 and LATE in warnings[0] and " 2 slots" in warnings[0]


def test_a_claim_window_in_a_year_without_a_known_calendar_is_marked_estimated(
    report: Callable[..., dict[str, Any]], write_events: Callable[..., Path], write_config: Callable[..., Path]
) -> None:
    one_event = write_events(slot(OTHER, "2026-12-01T10:00:00+08:00", 1, 1))
    # December 2026: the claim opens in January 2027, a year the bundled calendar does not know.
    # On weekdays only: Fri 1, Mon 4 .. Thu 7 January; the 5th working day is the 7th.
    guessed = report(one_event, month="2026-12", extra=("--app", OTHER))[OTHER]["claim_window"]
    assert guessed == {"opens": "2027-01-08", "closes": "2027-03-01", "estimated": True}
    # With the year's official list (1 January off), the 5th working day is Friday the 8th.
    official = write_config("[[calendar]]\nyear = 2027\nholidays = [2027-01-01]\n", "calendar.toml")
    known = report(one_event, month="2026-12", settings=official, extra=("--app", OTHER))[OTHER]["claim_window"]
    assert known == {"opens": "2027-01-09", "closes": "2027-03-01", "estimated": False}


def test_text_report_names_the_app_availability_and_periods(
    run_report: Callable[..., CliRun], march_events: Path
) -> None:
    run = run_report(march_events, fmt="text")
    assert run.code == 0
    assert APP in run.out and OTHER in run.out
    assert "99.89%" in run.out
    lines = run.out.splitlines()
    period_lines = [line for line in lines if "2019-03-10 10:00" in line]
    assert len(period_lines) == 1 and "10:30" in period_lines[0] and "90.00%" in period_lines[0]
    assert any("2019-03-12 14:15" in line and "14:20" in line for line in lines)
    exempt_lines = [line for line in lines if "2019-03-20 03:00" in line and "slots" in line]
    assert len(exempt_lines) == 1 and "03:15" in exempt_lines[0] and "announced-maintenance" in exempt_lines[0]
    with pytest.raises(ValueError):  # the text form is not JSON
        json.loads(run.out)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["report", "--events", "{events}"], "--month"),
        (["report", "--events", "{events}", "--month", "2026-13"], "2026-13"),
        (["report", "--events", "{events}", "--month", "March"], "March"),
        (["report", "--month", "2019-03"], "--events"),
        (["report", "--events", "{missing}", "--month", "2019-03"], "{missing}"),
        (["report", "--events", "{events}", "--month", "2019-03", "--config", "{bad_config}"], "partitons"),
        (["report", "--events", "{events}", "--month", "2019-03", "--config", "{missing}"], "{missing}"),
        (["report", "--events", "{events}", "--month", "2019-03", "--format", "xml"], "xml"),
        (["report", "--events", "{events}", "--month", "2019-03", "--format", "html"], "--out"),
        (["report", "--events", "{events}", "--month", "2019-03", "--out", "{tmp}"], "--out"),
        (["report", "--events", "{events}", "--month", "2019-03", "--format", "html", "--out", "{events}"], "{events}"),
        ([], "COMMAND"),
        pytest.param(["report", "--events", "{events}", "--month", "0000-01"], "0000-01"),
        pytest.param(["report", "--events", "{events}", "--month", "9999-12"], "9999-12"),
    ],
)
def test_errors_are_one_line_with_status_2(
    cli: Callable[..., CliRun],
    write_events: Callable[..., Path],
    write_config: Callable[..., Path],
    tmp_path: Path,
    argv: list[str],
    named: str,
) -> None:
    paths = {
        "events": str(write_events(slot(OTHER, "2019-03-15T12:00:00+08:00", 2, 2))),
        "missing": str(tmp_path / "no-such-file.jsonl"),
        "bad_config": str(write_config("[kafka]\npartitons = 3\n", "bad.toml")),
        "tmp": str(tmp_path),
    }
    run = cli(*[arg.format(**paths) for arg in argv])
    line = run.assert_one_line_error()
    assert named.format(**paths) in line
    assert run.out == ""


def test_csv_and_html_statements_agree_with_the_json(
    run_report: Callable[..., CliRun], march_events: Path, tmp_path: Path
) -> None:
    """The three forms of one report: CSV rows sum to the JSON's figures, one page per service month, same digests."""
    as_json = run_report(march_events, fmt="json")
    months = json.loads(as_json.out)
    as_csv = run_report(march_events, fmt="csv")
    assert as_csv.code == 0, as_csv.err
    rows = list(csv.DictReader(line for line in io.StringIO(as_csv.out) if not line.startswith("#")))
    footer = [line for line in as_csv.out.splitlines() if line.startswith("# digest ")]
    assert len(footer) == len(months)
    for month, digest_line in zip(months, footer, strict=True):
        span = f"{month['service_month']['start']}/{month['service_month']['end']}"
        mine = [row for row in rows if (row["app_id"], row["service_month"]) == (month["app_id"], span)]
        assert sum(int(row["requests"]) for row in mine) == month["requests"]
        assert [row["verdict"] for row in mine].count("unavailable") == month["unavailable_slots"]
        assert [row["verdict"] for row in mine].count("exempt") == month["exempt_slots"]
        assert digest_line == f"# digest {month['app_id']} {span} sha256 {month['digest']}"
    out = tmp_path / "pages"
    as_html = run_report(march_events, fmt="html", extra=["--out", str(out)])
    assert as_html.code == 0, as_html.err
    pages = sorted(out.iterdir())
    assert [p.name for p in pages] == sorted(f"{m['app_id']}-{m['service_month']['start']}.html" for m in months)
    for month in months:
        page = (out / f"{month['app_id']}-{month['service_month']['start']}.html").read_text(encoding="utf-8")
        assert month["digest"] in page and month["availability_display"] in page
