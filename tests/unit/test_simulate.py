"""`sla-stream simulate`: what it writes follows the event contract, is reproducible, and shows its incidents."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stream.cli import main
from stream.events import TimeBounds, parse_line

if TYPE_CHECKING:
    from conftest import CliRun

INCIDENT_APP, CALM_APP = "1400000001", "1400000002"
# Three hours of two apps; app 1 succeeds at 50% for 30 minutes from 09:00 (+08:00).
# At 200 requests a minute at peak, each of its slots holds hundreds of requests,
# so a 50% slot is below 99% beyond any doubt, and with a fixed seed the file is fixed.
ARGS = [
    "simulate",
    "--apps",
    "2",
    "--start",
    "2019-03-10T08:00",
    "--end",
    "2019-03-10T11:00",
    "--incident",
    f"2019-03-10T09:00+08:00,30m,0.5,{INCIDENT_APP}",
    "--peak-per-minute",
    "200",
    "--duplicate-rate",
    "0.02",
]
BOUNDS = TimeBounds(earliest_ms=946_684_800_000, latest_ms=4_102_444_800_000)


def simulate(out: Path, seed: int) -> Path:
    assert main([*ARGS, "--seed", str(seed), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(tmp_path_factory.mktemp("simulate") / "events.jsonl", seed=7)


@pytest.fixture(scope="module")
def lines(events_file: Path) -> list[str]:
    return events_file.read_text(encoding="utf-8").splitlines()


def test_every_line_follows_the_event_contract(lines: list[str]) -> None:
    assert len(lines) > 1000
    events = [parse_line(line, BOUNDS) for line in lines]
    assert {e.app_id for e in events} == {INCIDENT_APP, CALM_APP}
    assert {e.kind for e in events} == {"request", "success"}


def test_the_same_seed_gives_the_same_file_and_another_seed_does_not(events_file: Path, tmp_path: Path) -> None:
    again = simulate(tmp_path / "again.jsonl", seed=7)
    other = simulate(tmp_path / "other.jsonl", seed=8)
    assert again.read_bytes() == events_file.read_bytes()
    assert other.read_bytes() != events_file.read_bytes()


def test_duplicates_exist_and_carry_identical_content(lines: list[str]) -> None:
    by_id: dict[tuple[str, str], set[str]] = defaultdict(set)
    deliveries: dict[tuple[str, str], int] = defaultdict(int)
    for line in lines:
        record = json.loads(line)
        key = (record["type"], record["event_id"])
        by_id[key].add(line)
        deliveries[key] += 1
    duplicated = [key for key, count in deliveries.items() if count > 1]
    assert duplicated, "a 2% duplicate rate over thousands of events gave no duplicate"
    assert all(len(by_id[key]) == 1 for key in duplicated)


def test_each_request_has_at_most_one_success_and_successes_name_their_request(lines: list[str]) -> None:
    requests: dict[str, int] = {}
    successes: dict[str, set[str]] = defaultdict(set)
    for event in (parse_line(line, BOUNDS) for line in lines):
        if event.kind == "request":
            requests[event.event_id] = event.ts
        else:
            successes[event.request_id].add(event.event_id)
    for event in (parse_line(line, BOUNDS) for line in lines):
        if event.kind == "success":
            assert event.request_id in requests
            assert event.ts >= requests[event.request_id]
            assert event.request_ts in (None, requests[event.request_id])
    assert successes and all(len(ids) == 1 for ids in successes.values())


def test_the_incident_shows_in_the_report_for_its_app_only(
    cli: Callable[..., CliRun], events_file: Path, lines: list[str]
) -> None:
    run = cli("report", "--events", events_file, "--month", "2019-03", "--format", "json")
    assert run.code == 0, run.err
    months = {m["app_id"]: m for m in json.loads(run.out)}
    assert set(months) == {INCIDENT_APP, CALM_APP}
    periods = months[INCIDENT_APP]["unavailable_periods"]
    assert [(p["start"], p["end"], p["slots"]) for p in periods] == [
        ("2019-03-10T09:00:00+08:00", "2019-03-10T09:30:00+08:00", 6)
    ]
    assert all(0.3 < p["lowest_success_rate"] < 0.7 for p in periods)
    assert months[CALM_APP]["unavailable_slots"] == 0
    distinct_requests = {json.loads(line)["event_id"] for line in lines if '"type":"request"' in line}
    assert sum(m["requests"] for m in months.values()) == len(distinct_requests)


HOUR = ["--start", "2019-03-10T08:00", "--end", "2019-03-10T09:00"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--apps", "0", *HOUR], "--apps"),
        ([*HOUR, "--incident", "yesterday,30m"], "yesterday"),
        ([*HOUR, "--incident", "2019-03-10T08:10,30x"], "30x"),
        ([*HOUR, "--incident", "2019-03-10T08:10,30m,1.5"], "1.5"),
        ([*HOUR, "--base-failure-rate", "1.5"], "1.5"),
        (["--month", "2019-03", "--start", "2019-03-10T08:00"], "--month"),
        (["--month", "2019-13"], "2019-13"),
        (["--start", "2019-03-10T09:00", "--end", "2019-03-10T08:00"], "--end"),
        (["--start", "2019-03-10T08:00"], "--end"),
        (["--apps", "two", "--month", "2019-03"], "two"),
        pytest.param([*HOUR, "--peak-per-minute", "inf"], "--peak-per-minute"),
        pytest.param([*HOUR, "--peak-per-minute", "nan"], "--peak-per-minute"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_status_2(
    cli: Callable[..., CliRun], tmp_path: Path, extra: list[str], named: str
) -> None:
    out = tmp_path / "never.jsonl"
    run = cli("simulate", *extra, "--out", out)
    assert named in run.assert_one_line_error()
    assert not out.exists()
