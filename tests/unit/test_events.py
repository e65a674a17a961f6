"""The event contract of docs/design.md: what parse_line / parse_event accept, and what they refuse and why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from event_examples import BOUNDS, EARLIEST, EXAMPLES, LATEST, REQUEST, SUCCESS
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import InvalidEvent, RequestEvent, SuccessEvent, TimeBounds, parse_event, parse_line, to_line

REQUIRED = {
    "request": ["event_id", "app_id", "room_id", "user_id", "ts"],
    "success": ["event_id", "request_id", "app_id", "room_id", "user_id", "ts"],
}
TEXT_FIELDS = {kind: [f for f in fields if f != "ts"] for kind, fields in REQUIRED.items()}


def line(kind: str, **changes: Any) -> str:
    """The contract example of ``kind`` as a file line, with fields changed (``None``: removed)."""
    record = {"type": kind, **EXAMPLES[kind], **changes}
    return json.dumps({k: v for k, v in record.items() if v is not None})


def refusal(text: str) -> str:
    with pytest.raises(InvalidEvent) as raised:
        parse_line(text, BOUNDS)
    return str(raised.value)


def test_the_contract_request_example_is_accepted() -> None:
    expected = RequestEvent("r-123", "1400000001", "42", "u1", 1552183200000)
    assert parse_event(dict(REQUEST), "request", BOUNDS) == expected
    assert parse_line(line("request"), BOUNDS) == expected


def test_the_contract_success_example_is_accepted() -> None:
    expected = SuccessEvent("s-123", "r-123", "1400000001", "42", "u1", 1552183200400, 1552183200000)
    assert parse_event(dict(SUCCESS), "success", BOUNDS) == expected
    assert parse_line(line("success"), BOUNDS) == expected


def test_kind_of_a_parsed_event_follows_its_type() -> None:
    assert parse_line(line("request"), BOUNDS).kind == "request"
    assert parse_line(line("success"), BOUNDS).kind == "success"


@pytest.mark.parametrize("text", ["not json", '{"type": "request", ', "", "{'type': 'request'}"])
def test_a_line_that_is_not_json_is_refused(text: str) -> None:
    assert "JSON" in refusal(text)


@pytest.mark.parametrize(
    "text",
    ['{"type": "request", "ts": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000],
    ids=["5000-digit-number", "nested-100000-deep"],
)
def test_a_line_json_cannot_decode_is_refused_not_a_crash(text: str) -> None:
    assert refusal(text)


@pytest.mark.parametrize("text", [json.dumps([{"type": "request", **REQUEST}]), "42", '"request"', "null", "true"])
def test_a_line_that_is_json_but_not_an_object_is_refused(text: str) -> None:
    assert "object" in refusal(text)


@pytest.mark.parametrize("record", [[REQUEST], 42, "r-123", None])
def test_parse_event_refuses_a_value_that_is_not_an_object(record: Any) -> None:
    with pytest.raises(InvalidEvent, match="object"):
        parse_event(record, "request", BOUNDS)


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in REQUIRED.items() for f in fields])
def test_each_missing_required_field_is_named(kind: str, field: str) -> None:
    message = refusal(line(kind, **{field: None}))
    assert f"'{field}'" in message and "missing" in message
    record = {k: v for k, v in EXAMPLES[kind].items() if k != field}
    with pytest.raises(InvalidEvent, match=f"'{field}'"):
        parse_event(record, kind, BOUNDS)


def test_a_line_without_type_is_refused_naming_type() -> None:
    assert "'type'" in refusal(json.dumps(REQUEST))


@pytest.mark.parametrize("kind_value", ["click", "Request", "", 1, None])
def test_an_unknown_type_is_refused_naming_type(kind_value: Any) -> None:
    assert "'type'" in refusal(json.dumps({**REQUEST, "type": kind_value}))


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("request", "ts", "1552183200000"),  # string
        ("request", "ts", 1552183200000.0),  # float
        ("request", "ts", True),  # bool (an int subclass in Python)
        ("request", "ts", "2019-03-10T10:00:00+08:00"),  # an ISO string
        ("success", "ts", 1552183200400.5),
        ("success", "request_ts", "1552183200000"),
        ("success", "request_ts", False),
        ("request", "app_id", 1400000001),  # int app_id
        ("success", "app_id", 1400000001),
        ("request", "event_id", ["r-123"]),
        ("success", "request_id", {"id": "r-123"}),
        ("request", "room_id", 42),
        ("request", "user_id", 1.5),
    ],
)
def test_wrong_types_are_refused_naming_the_field(kind: str, field: str, value: Any) -> None:
    assert f"'{field}'" in refusal(line(kind, **{field: value}))


@pytest.mark.parametrize(("field", "value"), [("ts", True), ("ts", False), ("request_ts", True)])
def test_a_bool_is_not_a_time_even_inside_the_bounds(field: str, value: bool) -> None:
    """JSON true/false are never epoch milliseconds, even when 0 and 1 would be plausible times."""
    from_the_epoch = TimeBounds(earliest_ms=0, latest_ms=LATEST)
    with pytest.raises(InvalidEvent, match=f"'{field}'"):
        parse_line(line("success", **{field: value}), from_the_epoch)
    assert parse_line(line("success", **{field: int(value)}), from_the_epoch)


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in TEXT_FIELDS.items() for f in fields])
def test_empty_strings_are_refused_naming_the_field(kind: str, field: str) -> None:
    message = refusal(line(kind, **{field: ""}))
    assert f"'{field}'" in message and "empty" in message


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("request", "ts", EARLIEST - 1),
        ("request", "ts", LATEST + 1),
        ("request", "ts", 0),
        ("request", "ts", -1),
        ("request", "ts", 10**30),  # beyond any calendar
        ("success", "ts", LATEST + 1),
        ("success", "request_ts", EARLIEST - 1),
        ("success", "request_ts", LATEST + 1),
        ("request", "ts", 1552183200),  # seconds, not milliseconds: 1970
    ],
)
def test_absurd_times_are_refused_naming_the_field(kind: str, field: str, value: int) -> None:
    message = refusal(line(kind, **{field: value}))
    assert f"'{field}'" in message and "absurd" in message


@pytest.mark.parametrize("ts", [EARLIEST, LATEST])
def test_the_bounds_themselves_are_accepted(ts: int) -> None:
    assert parse_line(line("request", ts=ts), BOUNDS).ts == ts
    assert parse_line(line("success", ts=ts, request_ts=ts), BOUNDS).request_ts == ts


def test_a_success_without_request_ts_counts_at_its_own_time() -> None:
    for text in (line("success", request_ts=None), json.dumps({"type": "success", **SUCCESS, "request_ts": None})):
        event = parse_line(text, BOUNDS)
        assert isinstance(event, SuccessEvent)
        assert event.request_ts is None
        assert event.counted_ts == event.ts == SUCCESS["ts"]


def test_a_success_with_request_ts_counts_at_the_request_time() -> None:
    event = parse_line(line("success", ts=1552183500300, request_ts=1552183499900), BOUNDS)
    assert event.counted_ts == 1552183499900 != event.ts


def test_a_request_counts_at_its_own_time() -> None:
    assert parse_line(line("request"), BOUNDS).counted_ts == REQUEST["ts"]


def test_unknown_extra_fields_do_not_break_a_valid_event() -> None:
    event = parse_line(line("request", sdk_version="4.11"), BOUNDS)
    assert event == RequestEvent("r-123", "1400000001", "42", "u1", 1552183200000)


texts = st.text(min_size=1, max_size=20)
times = st.integers(EARLIEST, LATEST)
requests = st.builds(RequestEvent, texts, texts, texts, texts, times)
successes = st.builds(SuccessEvent, texts, texts, texts, texts, texts, times, st.none() | times)


@settings(max_examples=150, deadline=None)
@given(st.one_of(requests, successes))
def test_to_line_round_trips_through_parse_line(event: RequestEvent | SuccessEvent) -> None:
    text = to_line(event)
    assert "\n" not in text
    record = json.loads(text)
    assert record["type"] == event.kind
    assert "kind" not in record
    assert parse_line(text, BOUNDS) == event
