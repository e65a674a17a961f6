"""The plain path of ``parse_record`` and of file lines (msgspec) never decides otherwise than the full rules.

The plain path may decline a record (it then goes to the full rules), but
whatever it accepts, the full rules (Python's ``json`` and a check per
field) must accept too, with the same events in the same order. Records are
generated near the contract's edges: fields missing, doubled, extra or of
the wrong type; ids empty, over-long, non-ASCII, lone surrogates, raw
control characters; times out of bounds, huge, fractional or booleans;
arrays of them; byte-order marks and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import (
    Event,
    InvalidEvent,
    RequestEvent,
    SuccessEvent,
    TimeBounds,
    _parse_full,
    _parse_plain,
    _parse_plain_line,
    parse_file_line,
    parse_line,
    parse_plain_lines,
    parse_record,
    to_line,
    to_record,
)
from stream.sla.counting import EventKind
from stream.tools.simulate import TrafficPlan, generate

BOUNDS = TimeBounds(earliest_ms=946_684_800_000, latest_ms=1_800_000_000_000)
FIELDS = {
    "request": ("event_id", "app_id", "room_id", "user_id", "ts"),
    "success": ("event_id", "request_id", "app_id", "room_id", "user_id", "ts", "request_ts"),
}

texts = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12),
    st.just(""),
    st.just("x" * 256),
    st.just("x" * 257),
    st.text(min_size=1, max_size=4),  # any code point, surrogates included
    st.sampled_from(["\x00", "a\x7fb", "房间", "\ud800", "é"]),
)
times = st.one_of(
    st.integers(BOUNDS.earliest_ms - 5, BOUNDS.earliest_ms + 5),
    st.integers(BOUNDS.latest_ms - 5, BOUNDS.latest_ms + 5),
    st.integers(BOUNDS.earliest_ms, BOUNDS.latest_ms),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
values = st.one_of(texts, times, st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.none()))


ascii_ids = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
in_bounds = st.integers(BOUNDS.earliest_ms, BOUNDS.latest_ms)


@st.composite
def objects(draw: st.DrawFn, kind: EventKind) -> str:
    """A JSON object's text near the contract: valid, valid but for one thing, or anything goes.

    The first two keep most records acceptable (so the subset property is
    tested on many accepted records); the last reaches the odd corners.
    """
    mode = draw(st.sampled_from(["valid", "one off", "wild"]))
    odd = draw(st.sampled_from(FIELDS[kind])) if mode == "one off" else None
    parts = []
    for name in FIELDS[kind]:
        is_time = name in ("ts", "request_ts")
        if mode == "valid" or (mode == "one off" and name != odd):
            value = draw((in_bounds | st.none()) if name == "request_ts" else in_bounds if is_time else ascii_ids)
        else:
            if draw(st.integers(0, 9)) == 0:
                continue  # missing
            value = draw((times if is_time else texts) if draw(st.integers(0, 3)) else values)
        parts.append(f"{json.dumps(name)}: {json.dumps(value)}")
        if mode != "valid" and draw(st.integers(0, 14)) == 0:  # doubled: the last one counts, in both parsers
            parts.append(f"{json.dumps(name)}: {json.dumps(draw(values))}")
    if mode == "wild" and draw(st.integers(0, 4)) == 0:
        parts.append(f"{json.dumps(draw(st.text(max_size=5)))}: {json.dumps(draw(values))}")
    if mode == "wild" and draw(st.integers(0, 9)) == 0:
        parts.append('"extra": ' + "9" * 5000)  # a number Python's json refuses to convert
    order = draw(st.permutations(parts))
    return "{" + ", ".join(order) + "}"


@st.composite
def records(draw: st.DrawFn, kind: EventKind) -> bytes:
    """A record's bytes: one object or an array of them, sometimes mangled at the byte level."""
    if draw(st.booleans()):
        text = draw(objects(kind))
    else:
        text = "[" + ", ".join(draw(st.lists(objects(kind), max_size=4))) + "]"
    raw = text.encode("utf-8", errors="surrogatepass")
    mangle = draw(st.integers(0, 19))
    if mangle == 0:
        raw = b"\xef\xbb\xbf" + raw
    elif mangle == 1:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\x0a", b"\x09", b"\\", b"\xc3"])) + raw[at:]
    return raw


def assert_plain_agrees(raw: bytes, kind: EventKind) -> None:
    plain = _parse_plain(raw, kind, BOUNDS)
    if plain is not None:
        assert _parse_full(raw, kind, BOUNDS) == (plain, []), raw


GOOD = '"event_id": "e", "app_id": "a", "room_id": "r", "user_id": "u"'


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        (f'{{{GOOD}, "ts": 1, "ts": 1000000000000}}', True),  # doubled key: both keep the last value
        (f'{{{GOOD}, "ts": 01000000000000}}', False),  # a leading zero is not JSON
        (f'{{{GOOD}, "ts": 1000000000000}}'.replace('"e"', '"a\\nb"', 1), False),  # any escape: the full rules
        (f'{{{GOOD}, "ts": 1000000000000}}'.replace('"e"', '"\\ud800"', 1), False),  # a lone surrogate
        (f'{{{GOOD}, "ts": 1000000000000}}'.replace('"e"', '"a\nb"', 1), False),  # a raw control character
        (f'\ufeff[{{{GOOD}, "ts": 1000000000000}}]', False),  # byte-order mark before an array
        (f'[{{{GOOD}, "ts": 1000000000000}}, {{{GOOD}, "ts": 1.0}}]', False),  # one bad element: all full rules
        (f'{{{GOOD}, "ts": 1000000000000, "ts2": 1}}', False),  # an unknown field
    ],
)
def test_edges_of_the_plain_path(raw: str, plain: bool) -> None:
    assert (_parse_plain(raw.encode(), "request", BOUNDS) is not None) is plain
    assert_plain_agrees(raw.encode(), "request")


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_plain_path_accepts_only_what_the_full_rules_accept(data) -> None:
    kind = data.draw(st.sampled_from(["request", "success"]))
    assert_plain_agrees(data.draw(records(kind)), kind)


def simulated_events() -> list[Event]:
    """Two hours of the simulator's traffic for two apps, some successes without their request's time."""
    return list(
        generate(
            TrafficPlan(
                app_ids=("1400000001", "1400000002"),
                start_ms=1_795_699_200_000,
                end_ms=1_795_706_400_000,
                peak_per_minute=60,
                seed=5,
                tz=ZoneInfo("Asia/Shanghai"),
                missing_request_ts_rate=0.05,
            )
        )
    )


def test_the_simulators_records_take_the_plain_path() -> None:
    """The speed claim: what producers usually send (here the simulator's) never needs the full rules."""
    events = simulated_events()
    for event in events[:2000]:
        single = json.dumps(to_record(event)).encode()
        assert _parse_plain(single, event.kind, BOUNDS) == [event]
    requests = [e for e in events if e.kind == "request"][:100]
    array = json.dumps([to_record(e) for e in requests]).encode()
    assert parse_record(array, "request", BOUNDS) == (requests, [])
    assert _parse_plain(array, "request", BOUNDS) == requests


# The plain path of event file lines (``type`` first): one line, and a block of lines as one array.


def full_rules_of_line(raw: bytes) -> Event | None | str:
    """What the full rules make of one file line: its event, None (blank), or the reason it is refused."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 at byte {error.start}"
    if not line.strip():
        return None
    try:
        return parse_line(line, BOUNDS)
    except InvalidEvent as error:
        return str(error)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A file line near the usual one: ``type`` first (either spacing), last or missing, a kind that does not match,
    two records on one line, a record cut short or with more after it, sometimes mangled at the byte level."""
    kind = draw(st.sampled_from(["request", "success"]))
    body = draw(objects(kind))
    said = draw(st.sampled_from(["request", "success"])) if draw(st.integers(0, 5)) == 0 else kind
    form = draw(st.integers(0, 9))
    if form <= 3:
        text = f'{{"type":"{said}",' + body[1:]
    elif form <= 5:
        text = f'{{"type": "{said}", ' + body[1:]
    elif form == 6:
        text = body[:-1] + f', "type": "{said}"}}' if body != "{}" else f'{{"type": "{said}"}}'
    elif form == 7:
        text = f'{{"type":"{said}",' + body[1:] + draw(st.sampled_from([",", " ", "", ", "])) + draw(objects(kind))
    elif form == 8:
        text = f'{{"type":"{said}",' + body[1 : draw(st.integers(1, max(1, len(body))))]
    else:
        text = f'{{"type":"{said}",' + body[1:] + draw(st.sampled_from(["}", "]", "\r", "  ", "\t", "x", "\x0b"]))
    raw = text.encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 19)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\t", b"\\", b"\xc3", b"\r", b"{", b"}"])) + raw[at:]
    return raw


@settings(max_examples=1500, deadline=None)
@given(lines())
def test_a_line_is_read_as_the_full_rules_read_it(raw: bytes) -> None:
    """``parse_file_line`` (plain path first) decides every line, newline or not, as the full rules alone do."""
    for line in (raw, raw + b"\n"):
        expected = full_rules_of_line(line)
        try:
            found: Event | None | str = parse_file_line(line, BOUNDS)
        except InvalidEvent as error:
            found = str(error)
        assert found == expected, line
        plain = _parse_plain_line(line, BOUNDS)
        if plain is not None:
            assert plain == expected, line


@st.composite
def usual_lines(draw: st.DrawFn, spaced: bool) -> bytes:
    """A valid line in the usual form, as producers write it: compact, or with json.dumps's spaces."""
    ts = draw(in_bounds)
    if draw(st.booleans()):
        event: Event = RequestEvent(draw(ascii_ids), draw(ascii_ids), draw(ascii_ids), draw(ascii_ids), ts)
    else:
        ids = [draw(ascii_ids) for _ in range(5)]
        event = SuccessEvent(ids[0], ids[1], ids[2], ids[3], ids[4], ts, draw(in_bounds | st.none()))
    return (json.dumps({"type": event.kind, **to_record(event)}) if spaced else to_line(event)).encode()


@st.composite
def blocks(draw: st.DrawFn) -> list[bytes]:
    """A block of lines: mostly usual ones of one spacing, with now and then a line of :func:`lines`."""
    spaced = draw(st.booleans())
    return draw(st.lists(st.one_of(usual_lines(spaced), usual_lines(spaced), usual_lines(spaced), lines()), max_size=8))


@settings(max_examples=1500, deadline=None)
@given(blocks())
def test_a_block_of_lines_is_taken_only_when_each_line_would_be(block: list[bytes]) -> None:
    """What the block's array gives, the full rules give line by line: the same events, in order, per kind."""
    parsed = parse_plain_lines(block, BOUNDS)
    if parsed is None:
        return
    expected = [full_rules_of_line(line) for line in block]
    assert all(isinstance(e, RequestEvent | SuccessEvent) for e in expected), block
    assert parsed == (
        [e for e in expected if isinstance(e, RequestEvent)],
        [e for e in expected if isinstance(e, SuccessEvent)],
    ), block


def test_the_simulators_lines_take_the_plain_path_in_blocks() -> None:
    events = simulated_events()[:3000]
    compact = [to_line(e).encode() for e in events]
    spaced = [json.dumps({"type": e.kind, **to_record(e)}).encode() for e in events]
    for block in (compact, spaced):
        requests, successes = parse_plain_lines(block, BOUNDS) or ([], [])
        assert requests == [e for e in events if e.kind == "request"]
        assert successes == [e for e in events if e.kind == "success"]
    assert parse_plain_lines([*compact[:10], spaced[10]], BOUNDS) is None, "one spacing per block; the rest alone"
    assert [_parse_plain_line(line, BOUNDS) for line in spaced[10:20]] == events[10:20]
