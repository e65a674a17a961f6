"""`simulate --kafka` without a broker: live periods, pacing, packing events into records, arguments.

The sending itself is tested against the real broker in
tests/integration/test_simulate_kafka.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.events import to_record
from stream.tools.producer import KEY_FIELDS, PackedRecord, Packer, due_ms, live_period
from stream.tools.simulate import TrafficPlan, generate, generate_timed

if TYPE_CHECKING:
    from conftest import CliRun

NOW = 1_764_172_800_000  # 2025-11-26T16:00Z
HOUR = 3_600_000
SHANGHAI = ZoneInfo("Asia/Shanghai")
speeds = st.one_of(
    st.just(Fraction(0)),
    st.fractions(min_value=Fraction(1, 10), max_value=Fraction(1000), max_denominator=100),
)


@pytest.mark.parametrize(
    ("speed", "start", "end"),
    [
        (Fraction(60), NOW + 2 * 60_000 - 2 * HOUR, NOW + 2 * 60_000),  # 2 minutes of run replay the 2 hours to then
        (Fraction(1), NOW, NOW + 2 * HOUR),  # real time: the period starts now
        (Fraction(1, 2), NOW, NOW + 2 * HOUR),  # slower: starts now, runs behind the clock
        (Fraction(0), NOW - 2 * HOUR, NOW),  # as fast as possible: the 2 hours before now
    ],
)
def test_the_live_period(speed: Fraction, start: int, end: int) -> None:
    assert live_period(2 * HOUR, speed, NOW) == (start, end)


@given(
    duration=st.integers(min_value=1000, max_value=40 * 24 * HOUR),
    speed=speeds,
    share=st.fractions(min_value=0, max_value=1),
    tail_ms=st.integers(min_value=0, max_value=20 * 60_000),
)
def test_in_a_live_run_no_event_is_due_before_its_time(
    duration: int, speed: Fraction, share: Fraction, tail_ms: int
) -> None:
    start, end = live_period(duration, speed, NOW)
    arrival = start + int(duration * share) + tail_ms  # in the period, or after it (late successes)
    due = due_ms(arrival, start, NOW, speed)
    assert due >= arrival
    if speed and arrival <= end:  # in the period, the accelerated clock alone decides
        assert due - NOW == pytest.approx((arrival - start) / speed, abs=1)


def test_a_past_period_is_paced_by_the_accelerated_clock_alone() -> None:
    start = NOW - 30 * 24 * HOUR
    assert due_ms(start + HOUR, start, NOW, Fraction(60)) == NOW + 60_000
    assert due_ms(start + HOUR, start, NOW, Fraction(0)) == start + HOUR  # long past: at once
    assert due_ms(NOW + 5000, start, NOW, Fraction(0)) == NOW + 5000  # not before its time, even at speed 0


PLAN = TrafficPlan(
    app_ids=("1400000001", "1400000002"),
    start_ms=1_552_183_200_000,
    end_ms=1_552_183_200_000 + HOUR,
    peak_per_minute=300,
    seed=3,
    tz=SHANGHAI,
    duplicate_rate=0.02,
)


def pack(batch: int, key: str, window_ms: int = 5000) -> list[tuple[int, PackedRecord]]:
    """Every record the plan's events make, with the arrival time of the event that completed it."""
    packer = Packer(batch, KEY_FIELDS[key], window_ms)
    records = [(arrival, record) for arrival, event in generate_timed(PLAN) for record in packer.add(arrival, event)]
    return records + [(PLAN.end_ms + HOUR, record) for record in packer.drain()]


@pytest.mark.parametrize(
    ("batch", "key", "window_ms"), [(1, "room", 5000), (50, "app", 5000), (7, "user", 5000), (1000, "app", 10 * HOUR)]
)
def test_records_hold_every_event_once_in_order_by_kind_and_key(batch: int, key: str, window_ms: int) -> None:
    records = [record for _, record in pack(batch, key, window_ms)]
    events = list(generate(PLAN))
    assert Counter(e for r in records for e in r.events) == Counter(events)
    field = KEY_FIELDS[key]
    sent: dict[tuple[str, str], list] = {}
    for record in records:
        assert 1 <= len(record.events) <= batch
        assert {(e.kind, getattr(e, field)) for e in record.events} == {(record.kind, record.key)}
        sent.setdefault((record.kind, record.key), []).extend(record.events)
    expected: dict[tuple[str, str], list] = {}
    for event in events:
        expected.setdefault((event.kind, getattr(event, field)), []).append(event)
    assert sent == expected  # each kind and key in arrival order
    if batch == 1000:  # a window longer than the period: records fill up to --batch
        assert max(len(r.events) for r in records) == batch


def test_a_record_holds_events_that_arrived_within_the_window() -> None:
    timed = list(generate_timed(replace(PLAN, duplicate_rate=0)))
    arrival = {event: at for at, event in timed}
    packer = Packer(1000, "app_id", window_ms=2000)
    records = [record for at, event in timed for record in packer.add(at, event)] + packer.drain()
    assert max(len(record.events) for record in records) >= 5
    for record in records:
        assert max(arrival[e] for e in record.events) - arrival[record.events[0]] < 2000


def test_record_values_are_the_contract_json_without_type() -> None:
    request, success = (next(e for e in generate(PLAN) if e.kind == kind) for kind in ("request", "success"))
    single = json.loads(PackedRecord("request", "k", [request]).value(array=False))
    assert single == to_record(request) and "type" not in single
    assert json.loads(PackedRecord("success", "k", [success, success]).value(array=True)) == [to_record(success)] * 2


def test_relative_incidents_and_periods_inside_slots(cli: Callable[..., CliRun], tmp_path: Path) -> None:
    common = ["simulate", "--apps", "1", "--peak-per-minute", "100", "--seed", "5"]
    absolute, relative, inner = tmp_path / "absolute.jsonl", tmp_path / "relative.jsonl", tmp_path / "inner.jsonl"
    period = ["--start", "2019-03-10T08:00", "--end", "2019-03-10T09:00"]
    assert cli(*common, *period, "--incident", "2019-03-10T08:20,10m,0.5", "--out", absolute).code == 0
    assert cli(*common, *period, "--incident", "+20m,10m,0.5", "--out", relative).code == 0
    assert relative.read_bytes() == absolute.read_bytes()
    assert cli(*common, "--start", "2019-03-10T08:02:30", "--end", "2019-03-10T08:57:30", "--out", inner).code == 0
    requests = [json.loads(line) for line in inner.read_text().splitlines() if '"type":"request"' in line]
    assert requests and all(1_552_176_150_000 <= r["ts"] < 1_552_179_450_000 for r in requests)


HOUR_ARGS = ["--start", "2019-03-10T08:00", "--end", "2019-03-10T09:00"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--kafka", "--out", "x.jsonl", *HOUR_ARGS], "--kafka"),
        ([*HOUR_ARGS], "--out"),
        (["--out", "x.jsonl", "--batch", "5", *HOUR_ARGS], "--batch applies only with --kafka"),
        (["--out", "x.jsonl", "--duration", "1h"], "--duration applies only with --kafka"),
        (["--kafka", "--batch", "0", *HOUR_ARGS], "--batch"),
        (["--kafka", "--batch", "1001", *HOUR_ARGS], "--batch"),
        (["--kafka", "--speed", "-1", *HOUR_ARGS], "--speed"),
        (["--kafka", "--speed", "fast", *HOUR_ARGS], "--speed"),
        (["--kafka", "--speed", "inf", *HOUR_ARGS], "--speed"),
        (["--kafka", "--key", "tenant", *HOUR_ARGS], "--key"),
        (["--kafka", "--duration", "0m"], "--duration"),
        (["--kafka", "--duration", "2x"], "--duration"),
        (["--kafka", "--duration", "1h", "--month", "2019-03"], "--duration"),
        (["--kafka"], "--duration"),
        (["--kafka", "--start", "2999-01-01T00:00", "--end", "2999-01-02T00:00"], "future"),
        (["--kafka", "--duration", "1h", "--incident", "+2x,5m"], "+OFFSET"),
    ],
)
def test_bad_kafka_arguments_are_one_line_errors_before_any_connection(
    cli: Callable[..., CliRun], monkeypatch: pytest.MonkeyPatch, extra: list[str], named: str
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens: reaching it would fail differently
    run = cli("simulate", *extra)
    message = run.assert_one_line_error()
    assert named in message and "127.0.0.1:1" not in message
