"""Poison records: no bytes a Kafka record can hold may stop a batch.

Each input below once lost a whole batch: parsing accepted what Redis could
not store, or raised where it should have refused. Now ``parse_record``
either yields events that are safe to send to Redis (ids that encode as
UTF-8, at most ``MAX_TEXT_CHARS`` long) or refuses with a reason naming the
problem, and every refusal makes a dead letter Kafka accepts (valid JSON,
far under the 1 MB message limit). The fuzz tests at the end hold that for
arbitrary bytes and arbitrary JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from event_examples import BOUNDS, EARLIEST, EXAMPLES, LATEST, REQUEST
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream.events import (
    MAX_TEXT_CHARS,
    REASON_CATEGORIES,
    Event,
    InvalidEvent,
    Rejected,
    RequestEvent,
    SuccessEvent,
    parse_line,
    parse_record,
)
from stream.formats import MAX_PAYLOAD_BYTES, MAX_REASON_CHARS, DeadLetter

TEXT_FIELDS = {
    "request": ["event_id", "app_id", "room_id", "user_id"],
    "success": ["event_id", "request_id", "app_id", "room_id", "user_id"],
}
LETTER_CAP = 100_000
"""Every dead letter's value stays under this many bytes, a tenth of Kafka's default message limit."""


def encoded(value: Any) -> bytes:
    """``value`` as a record's bytes; ``json.dumps`` writes an unpaired surrogate as its ``\\ud800`` escape."""
    return json.dumps(value).encode("ascii")


def refusal(value: bytes | None, kind: str = "request") -> Rejected:
    """The one refusal of a record that yields no event."""
    events, rejected = parse_record(value, kind, BOUNDS)
    assert events == []
    [only] = rejected
    return only


def letter(rejected: Rejected) -> dict[str, Any]:
    """The dead letter of ``rejected``, checked to be within the cap, and its JSON read back."""
    value = DeadLetter("t-requests", 3, 1234, rejected).value()
    assert len(value) < LETTER_CAP
    message = json.loads(value.decode("utf-8"))
    original = rejected.payload
    assert message["payload_bytes"] == len(original)
    assert message["payload_sha256"] == hashlib.sha256(original).hexdigest()
    assert (message["topic"], message["partition"], message["offset"]) == ("t-requests", 3, 1234)
    return message


def kept_bytes(message: dict[str, Any]) -> bytes:
    """The payload bytes a letter carries, decoded from its ``payload_encoding``."""
    if message["payload_encoding"] == "base64":
        return base64.b64decode(message["payload"], validate=True)
    assert message["payload_encoding"] == "utf-8"
    return message["payload"].encode("utf-8")


# Byte-order marks and encodings


@pytest.mark.parametrize(
    ("mark", "codec", "named"),
    [
        (b"\xff\xfe", "utf-16-le", "UTF-16 (little-endian byte-order mark FF FE)"),
        (b"\xfe\xff", "utf-16-be", "UTF-16 (big-endian byte-order mark FE FF)"),
        (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32 (little-endian byte-order mark FF FE 00 00)"),
        (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32 (big-endian byte-order mark 00 00 FE FF)"),
    ],
)
def test_utf16_and_utf32_with_a_byte_order_mark_are_refused_by_name(mark: bytes, codec: str, named: str) -> None:
    value = mark + json.dumps(REQUEST).encode(codec)
    assert json.loads(value) == REQUEST  # what json.loads(bytes) let through: it guesses the encoding
    rejected = refusal(value)
    assert rejected.reason == f"not UTF-8: looks like {named}; the contract is UTF-8"
    assert rejected.payload == value
    assert letter(rejected)["payload_encoding"] == "base64"


def test_utf16_without_a_byte_order_mark_is_refused_as_not_json() -> None:
    """UTF-16 of ASCII text is valid UTF-8 (NUL bytes between the characters), but not JSON."""
    assert refusal(json.dumps(REQUEST).encode("utf-16-le")).reason.startswith("not valid JSON: ")


def test_a_utf8_byte_order_mark_is_refused_in_records_and_file_lines() -> None:
    """The contract is plain UTF-8: RFC 8259 forbids sending a byte-order mark, so it is refused, not skipped."""
    reason = "starts with a UTF-8 byte-order mark (EF BB BF); the contract is plain UTF-8 without one"
    value = b"\xef\xbb\xbf" + encoded(REQUEST)
    assert refusal(value).reason == reason
    assert letter(refusal(value))["payload"] == value.decode("utf-8")
    with pytest.raises(InvalidEvent) as raised:
        parse_line("\ufeff" + json.dumps({"type": "request", **REQUEST}), BOUNDS)
    assert str(raised.value) == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id": "\xff\xfe"}', "not UTF-8: invalid start byte (0xff) at byte 14"),
        (b'{"event_id": "\xed\xa0\x80"}', "not UTF-8: invalid continuation byte (0xed) at byte 14"),  # a surrogate
        (b'{"event_id": "\xc0\xaf"}', "not UTF-8: invalid start byte (0xc0) at byte 14"),  # overlong "/"
        (b'{"event_id": "\xe4\xb8', "not UTF-8: unexpected end of data (0xe4) at byte 14"),
        (b'{"event_id": "caf\xe9"}', "not UTF-8: invalid continuation byte (0xe9) at byte 17"),  # Latin-1
    ],
    ids=["ff-fe-inside", "encoded-surrogate", "overlong", "cut-character", "latin-1"],
)
def test_invalid_utf8_is_refused_naming_the_byte(value: bytes, reason: str) -> None:
    rejected = refusal(value)
    assert rejected.reason == reason
    assert kept_bytes(letter(rejected)) == value


# Text fields


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in TEXT_FIELDS.items() for f in fields])
@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff"])
def test_an_unpaired_surrogate_in_any_text_field_is_refused(kind: str, field: str, surrogate: str) -> None:
    value = encoded(EXAMPLES[kind] | {field: f"x{surrogate}y"})
    reason = f"field '{field}' holds an unpaired surrogate (\\u{ord(surrogate):04x}), not encodable as UTF-8"
    rejected = refusal(value, kind)
    assert rejected.reason == reason
    assert letter(rejected)["payload"] == value.decode("ascii")
    with pytest.raises(InvalidEvent) as raised:
        parse_line(json.dumps({"type": kind, **EXAMPLES[kind], field: surrogate}), BOUNDS)
    assert str(raised.value) == reason


def test_a_surrogate_pair_spelled_as_escapes_is_one_valid_character() -> None:
    value = b'{"event_id": "r-\\ud83d\\ude00", "app_id": "a", "room_id": "1", "user_id": "u", "ts": 1552183200000}'
    [event], [] = parse_record(value, "request", BOUNDS)
    assert event.event_id == "r-\N{GRINNING FACE}"


@pytest.mark.parametrize("length", [MAX_TEXT_CHARS + 1, 1_000_000])
def test_a_text_field_longer_than_the_limit_is_refused(length: int) -> None:
    rejected = refusal(encoded(REQUEST | {"event_id": "r" * length}))
    assert rejected.reason == f"field 'event_id' is {length:,} characters long, more than 256"
    message = letter(rejected)
    assert message["payload_truncated"] is (length > MAX_PAYLOAD_BYTES)


def test_a_text_field_of_exactly_the_limit_is_accepted_counting_characters_not_bytes() -> None:
    event_id = "\N{CJK UNIFIED IDEOGRAPH-623F}" * MAX_TEXT_CHARS  # 768 bytes in UTF-8
    [event], [] = parse_record(json.dumps(REQUEST | {"event_id": event_id}).encode(), "request", BOUNDS)
    assert event.event_id == event_id


def test_a_million_character_unknown_field_is_ignored_like_any_unknown_field() -> None:
    """Unknown fields are never stored, so their size cannot reach Redis."""
    [event], [] = parse_record(encoded(REQUEST | {"note": "n" * 1_000_000}), "request", BOUNDS)
    assert event == RequestEvent("r-123", "1400000001", "42", "u1", 1552183200000)


def test_a_million_character_field_in_one_array_element_refuses_only_that_element() -> None:
    first, third = REQUEST | {"event_id": "r-1"}, REQUEST | {"event_id": "r-3"}
    huge = REQUEST | {"event_id": "r" * 1_000_000}
    events, [rejected] = parse_record(encoded([first, huge, third]), "request", BOUNDS)
    assert [event.event_id for event in events] == ["r-1", "r-3"]
    assert rejected.reason == "element 1: field 'event_id' is 1,000,000 characters long, more than 256"
    assert json.loads(rejected.payload) == huge
    message = letter(rejected)
    assert message["payload_truncated"] is True
    assert rejected.payload.startswith(kept_bytes(message))


# JSON that is not an event


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_as_a_time_are_refused(constant: str) -> None:
    value = json.dumps(REQUEST).replace("1552183200000", constant).encode()
    assert refusal(value).reason == f"not valid JSON: {constant} is not a JSON number"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_anywhere_refuse_the_whole_record(constant: str) -> None:
    """Not JSON at all (RFC 8259 has no such numbers), even in an unknown field of one array element."""
    extra = f'[{json.dumps(REQUEST)}, {json.dumps(REQUEST)[:-1]}, "score": {constant}}}]'.encode()
    assert refusal(extra).reason == f"not valid JSON: {constant} is not a JSON number"


def test_a_5000_digit_number_is_refused() -> None:
    rejected = refusal(json.dumps(REQUEST).replace("1552183200000", "9" * 5000).encode())
    assert rejected.reason.startswith("not valid JSON: a number too long to convert (Exceeds the limit (4300 digits)")
    assert len(rejected.reason) < 200


def test_a_4300_digit_time_is_absurd_in_a_short_reason() -> None:
    rejected = refusal(json.dumps(REQUEST).replace("1552183200000", "9" * 4300).encode())
    assert rejected.reason == "field 'ts' = a 4,300-digit number is an absurd time (out of any calendar)"


def test_nesting_100000_deep_is_refused() -> None:
    rejected = refusal(b"[" * 100_000 + b"]" * 100_000)
    assert rejected.reason == "not valid JSON: nested too deeply to parse"
    assert letter(rejected)["payload_truncated"] is True


def test_nesting_at_every_depth_up_to_the_parsers_limit_is_refused_never_raised() -> None:
    """A refused element is re-encoded for its letter: at the deepest depth that parses, that must still work."""
    refused_whole = 0
    for depth in range(1, 1_200, 7):
        events, rejected = parse_record(
            b"[" + encoded(REQUEST) + b"," + b"[" * depth + b"]" * depth + b"]", "request", BOUNDS
        )
        if events:
            assert [r.reason for r in rejected] == ["element 1: a request event must be a JSON object, got list"]
            assert rejected[0].payload == b"[" * depth + b"]" * depth
        else:
            assert [r.reason for r in rejected] == ["not valid JSON: nested too deeply to parse"]
            refused_whole += 1
    assert refused_whole > 0


def test_a_record_without_a_value_is_refused() -> None:
    rejected = refusal(None)
    assert (rejected.reason, rejected.payload) == ("record has no value (a tombstone)", b"")
    message = letter(rejected)
    assert (message["payload"], message["payload_encoding"], message["payload_truncated"]) == ("", "utf-8", False)


@pytest.mark.parametrize("value", [b"[]", b" [ ]\n"])
def test_an_empty_array_is_refused(value: bytes) -> None:
    assert refusal(value) == Rejected("empty JSON array", value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "not valid JSON: Expecting value at column 1"),
        (b"null", "a request event must be a JSON object, got NoneType"),
        (b"42", "a request event must be a JSON object, got int"),
        (b'"r-123"', "a request event must be a JSON object, got str"),
        (b'{"event_id": "r-1"} {}', "not valid JSON: Extra data at column 21"),
        (b'{\n"event_id": }', "not valid JSON: Expecting value at line 2 column 13"),
    ],
)
def test_json_that_is_not_an_event_object_is_refused(value: bytes, reason: str) -> None:
    assert refusal(value).reason == reason


def test_an_array_of_non_objects_refuses_each_element() -> None:
    events, rejected = parse_record(b'[1, "r-1", null, [], true, 1.5]', "success", BOUNDS)
    assert events == []
    assert [(r.reason, r.payload) for r in rejected] == [
        ("element 0: a success event must be a JSON object, got int", b"1"),
        ("element 1: a success event must be a JSON object, got str", b'"r-1"'),
        ("element 2: a success event must be a JSON object, got NoneType", b"null"),
        ("element 3: a success event must be a JSON object, got list", b"[]"),
        ("element 4: a success event must be a JSON object, got bool", b"true"),
        ("element 5: a success event must be a JSON object, got float", b"1.5"),
    ]


def test_an_unpaired_surrogate_in_an_array_element_is_refused_with_an_ascii_payload() -> None:
    bad = REQUEST | {"user_id": "\ud800"}
    events, [rejected] = parse_record(encoded([REQUEST, bad]), "request", BOUNDS)
    assert len(events) == 1
    assert rejected.reason.startswith("element 1: field 'user_id' holds an unpaired surrogate")
    assert rejected.payload.isascii() and json.loads(rejected.payload) == bad


def test_a_line_with_an_overlong_type_gets_a_short_reason() -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_line(json.dumps({**REQUEST, "type": "t" * 1_000_000}), BOUNDS)
    assert str(raised.value).startswith('field \'type\' must be "request" or "success", got \'tttt')
    assert str(raised.value).endswith("... (1,000,002 characters)")


# Dead letters


def test_a_dead_letter_is_keyed_by_its_origin() -> None:
    assert DeadLetter("t-successes", 0, 17, Rejected("r", b"")).key == b"t-successes:0:17"


def test_a_small_text_payload_round_trips_exactly() -> None:
    payload = json.dumps(REQUEST | {"room_id": '房间 "42"\n\t\x00'}, ensure_ascii=False).encode("utf-8")
    message = letter(Rejected("missing field 'x'", payload))
    assert message["reason"] == "missing field 'x'"
    assert (message["payload_encoding"], message["payload_truncated"]) == ("utf-8", False)
    assert message["payload"].encode("utf-8") == payload


def test_a_small_binary_payload_round_trips_exactly_in_base64() -> None:
    payload = bytes(range(256))
    message = letter(Rejected("not UTF-8", payload))
    assert (message["payload_encoding"], message["payload_truncated"]) == ("base64", False)
    assert kept_bytes(message) == payload


def test_a_long_binary_payload_keeps_its_first_64_kib() -> None:
    payload = b"\xff" * 1_000_000
    message = letter(Rejected("not UTF-8", payload))
    assert (message["payload_encoding"], message["payload_truncated"]) == ("base64", True)
    assert kept_bytes(message) == payload[:MAX_PAYLOAD_BYTES]


def test_a_long_text_payload_is_cut_between_characters() -> None:
    payload = "\N{EURO SIGN}".encode() * 30_000  # 3 bytes each: 65,536 falls inside a character
    message = letter(Rejected("r", payload))
    assert message["payload_truncated"] is True
    assert message["payload"] == "\N{EURO SIGN}" * (MAX_PAYLOAD_BYTES // 3)


def test_text_that_grows_when_escaped_is_cut_to_fit() -> None:
    """A control character takes six bytes in JSON: 64 KiB of them would write 384 KiB."""
    payload = b"\x01" * 1_000_000
    message = letter(Rejected("r", payload))
    assert (message["payload_encoding"], message["payload_truncated"]) == ("utf-8", True)
    assert message["payload"] == "\x01" * (MAX_PAYLOAD_BYTES // 6)


def test_a_payload_of_exactly_64_kib_is_kept_whole() -> None:
    payload = b"x" * MAX_PAYLOAD_BYTES
    message = letter(Rejected("r", payload))
    assert (message["payload"].encode(), message["payload_truncated"]) == (payload, False)


def test_a_long_reason_is_capped() -> None:
    message = letter(Rejected("\x00" * 1_000_000, b""))
    assert message["reason"] == "\x00" * (MAX_REASON_CHARS - 1) + "…"


def test_a_reason_holding_an_unpaired_surrogate_still_makes_valid_utf8_json() -> None:
    """Reasons from other callers may quote received text; the letter escapes what UTF-8 cannot hold."""
    assert letter(Rejected("bad clause '\ud800'", b""))["reason"] == "bad clause '\ud800'"


# Fuzz: arbitrary bytes, arbitrary JSON


def check_outcome(value: bytes | None, kind: str) -> tuple[list[Event], list[Rejected]]:
    """``parse_record`` does not raise; its events are safe for Redis; each refusal makes a valid letter."""
    events, rejected = parse_record(value, kind, BOUNDS)
    for event in events:
        assert event.kind == kind
        for field in TEXT_FIELDS[kind]:
            text = getattr(event, field)
            assert isinstance(text, str) and 1 <= len(text) <= MAX_TEXT_CHARS
            text.encode("utf-8")
        assert EARLIEST <= event.ts <= LATEST
        if isinstance(event, SuccessEvent) and event.request_ts is not None:
            assert EARLIEST <= event.request_ts <= LATEST
    for refused in rejected:
        assert isinstance(refused.payload, bytes) and refused.reason
        refused.reason.encode("utf-8")
        message = letter(refused)
        if not message["payload_truncated"]:
            assert kept_bytes(message) == refused.payload
    return events, rejected


kinds = st.sampled_from(["request", "success"])


@settings(max_examples=400, deadline=None)
@given(st.none() | st.binary(max_size=300) | st.binary(max_size=20).map(lambda b: b"\xff\xfe" + b), kinds)
def test_any_bytes_are_parsed_or_refused_never_raised(value: bytes | None, kind: str) -> None:
    check_outcome(value, kind)


texts = (
    st.text(st.characters(exclude_categories=()), max_size=8)  # any code point, surrogates included
    | st.builds("{}{}{}".format, st.text(max_size=3), st.characters(categories=["Cs"]), st.text(max_size=3))
    | st.text(st.sampled_from("ab"), min_size=MAX_TEXT_CHARS - 6, max_size=MAX_TEXT_CHARS + 4)
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts, _containers, max_leaves=12)
times = st.integers(EARLIEST, LATEST)


@st.composite
def events_and_poison(draw: st.DrawFn, kind: str) -> tuple[Any, bool]:
    """A valid event of ``kind`` (and True), or one with a field replaced by arbitrary JSON, or any JSON value."""
    valid = {name: draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)) for name in TEXT_FIELDS[kind]}
    valid["ts"] = draw(times)
    if kind == "success":
        valid["request_ts"] = draw(st.none() | times)
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return valid, True
    if choice == 1:
        return valid | {draw(st.sampled_from([*valid, "extra"])): draw(texts | json_values)}, False
    return draw(json_values), False


@st.composite
def json_records(draw: st.DrawFn) -> tuple[str, bytes, list[dict[str, Any]]]:
    """A record of one value or an array of values, as some producer might write it, and its valid events."""
    kind = draw(kinds)
    drawn = draw(st.lists(events_and_poison(kind), min_size=1, max_size=6))
    as_array = len(drawn) > 1 or draw(st.booleans())
    body = [value for value, _ in drawn] if as_array else drawn[0][0]
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    # Unescaped, an unpaired surrogate can only be written as the invalid UTF-8 a careless encoder emits.
    return kind, text.encode("utf-8", "surrogatepass"), [value for value, valid in drawn if valid]


def standard_json(value: bytes) -> Any:
    """``value`` read as the contract reads it (strict UTF-8, no NaN or Infinity); ValueError if it cannot be."""

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    return json.loads(value.decode("utf-8"), parse_constant=refuse)


@settings(max_examples=400, deadline=None)
@given(json_records())
@example(("request", b"[]", []))
def test_any_json_is_parsed_or_refused_and_valid_events_survive_beside_poison(
    record: tuple[str, bytes, list[dict[str, Any]]],
) -> None:
    kind, value, valid = record
    events, rejected = check_outcome(value, kind)
    try:
        decoded = standard_json(value)
    except ValueError:  # raw unpaired surrogates, or NaN/Infinity: nothing in the record can be trusted
        assert (events, len(rejected)) == ([], 1)
        return
    elements = decoded if isinstance(decoded, list) and decoded else [decoded]  # [] is refused as one
    assert len(events) + len(rejected) == len(elements)
    event_class = RequestEvent if kind == "request" else SuccessEvent
    kept = iter(events)
    assert all(event_class(**event) in kept for event in valid)  # every valid one, in order


CATEGORIES = [
    ("encoding", '{"a": 1}'.encode("utf-16")),
    ("encoding", b"\xef\xbb\xbf" + encoded(REQUEST)),
    ("encoding", b'{"event_id": "\xff"}'),
    ("encoding", encoded({**REQUEST, "room_id": "\ud800"}).replace(b"\\\\ud800", b"\\ud800")),
    ("json", b"{not json"),
    ("json", b'{"ts": NaN}'),
    ("shape", b"[]"),
    ("shape", b'"a string"'),
    ("empty", None),
    ("missing_field", encoded({k: v for k, v in REQUEST.items() if k != "ts"})),
    ("bad_field", encoded({**REQUEST, "room_id": 7})),
    ("bad_field", encoded({**REQUEST, "room_id": "x" * 1000})),
    ("time", encoded({**REQUEST, "ts": 5})),
    ("time", encoded({**REQUEST, "ts": "yesterday"})),
]


@pytest.mark.parametrize(("category", "value"), CATEGORIES)
def test_every_refusal_falls_in_a_named_category(category: str, value: bytes | None) -> None:
    """The ``reason`` label of the dead-letter metric: a few categories, whatever the message says."""
    rejected = refusal(value)
    assert rejected.category == category, rejected.reason
    assert category in REASON_CATEGORIES
