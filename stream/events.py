"""The event contract (docs/design.md): room-entry requests and successes, and their validation.

Every check names what was wrong, so a dead-lettered record or a skipped file
line can be fixed at its source. Whatever bytes a Kafka record holds,
:func:`parse_record` never raises: it yields valid events or refuses with a
reason, so no input can stop a batch. The rules, in the order they apply:

* **UTF-8.** The contract is UTF-8 JSON. A record is decoded strictly; one
  that is not UTF-8 is refused (``not UTF-8: ...``), and one starting with a
  UTF-16 or UTF-32 byte-order mark is named as such. A leading UTF-8
  byte-order mark is refused too: RFC 8259 forbids sending one, and a
  refusal that says so gets the producer fixed rather than guessed around.
* **JSON.** Standard JSON only: ``NaN``, ``Infinity`` and ``-Infinity`` are
  refused, as are an integer too long to convert (over 4,300 digits) and
  nesting deeper than the interpreter can parse (``[`` 100,000 times).
* **Text fields** (ids) are non-empty strings of at most
  :data:`MAX_TEXT_CHARS` characters that encode as UTF-8: a JSON escape can
  spell an unpaired surrogate (``"\\ud800"``), which no UTF-8 store can take.
* **Times**, ``ts`` and ``request_ts``, are integer epoch milliseconds (not
  ``true``, not ``1.5e12``); a time outside :class:`TimeBounds` is refused as
  absurd.

Example:
    >>> bounds = TimeBounds(earliest_ms=0, latest_ms=2_000_000_000_000)
    >>> parse_line('{"type": "request", "event_id": "r-1", "app_id": "1400000001", '
    ...            '"room_id": "42", "user_id": "u1", "ts": 1552183200000}', bounds).app_id
    '1400000001'
    >>> parse_line('{"type": "request", "event_id": "r-1"}', bounds)
    Traceback (most recent call last):
    ...
    stream.events.InvalidEvent: missing field 'app_id'
    >>> parse_record('{"event_id": "r-1"}'.encode("utf-16"), "request", bounds)[1][0].reason
    'not UTF-8: looks like UTF-16 (little-endian byte-order mark FF FE); the contract is UTF-8'
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

import msgspec

from stream.sla.counting import EventKind, counted_time


class InvalidEvent(ValueError):
    """A record that breaks the event contract; the message says which rule."""


@dataclass(frozen=True)
class TimeBounds:
    """The range of event times accepted as plausible, ``[earliest_ms, latest_ms]``."""

    earliest_ms: int
    latest_ms: int


MAX_TEXT_CHARS = 256
"""The longest id (in characters) accepted: ids become Redis set members and
hash fields, so a bounded id keeps one record from bloating the store."""

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
"""An id: checked for length when msgspec decodes a record into an event (the plain path)."""


class RequestEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A request to enter a room.

    A msgspec struct: the plain path decodes a record straight into it, in C
    (:func:`_parse_plain`); built by hand, nothing is checked.
    """

    event_id: _Text
    app_id: _Text
    room_id: _Text
    user_id: _Text
    ts: int

    kind: ClassVar[EventKind] = "request"

    @property
    def counted_ts(self) -> int:
        return self.ts


class SuccessEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A request's success; like :class:`RequestEvent`, decoded straight from a record by the plain path."""

    event_id: _Text
    request_id: _Text
    app_id: _Text
    room_id: _Text
    user_id: _Text
    ts: int
    request_ts: int | None = None

    kind: ClassVar[EventKind] = "success"

    @property
    def counted_ts(self) -> int:
        """The request's time when known: a success counts in its request's slot."""
        return counted_time(self.ts, self.request_ts)


Event = RequestEvent | SuccessEvent

_TEXT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    "request": ("event_id", "app_id", "room_id", "user_id"),
    "success": ("event_id", "request_id", "app_id", "room_id", "user_id"),
}

_BYTE_ORDER_MARKS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian mark begins with UTF-16's.
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian byte-order mark FF FE 00 00)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian byte-order mark 00 00 FE FF)"),
    (b"\xff\xfe", "UTF-16 (little-endian byte-order mark FF FE)"),
    (b"\xfe\xff", "UTF-16 (big-endian byte-order mark FE FF)"),
)


def _text(record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise InvalidEvent(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent(f"field {name!r} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidEvent(f"field {name!r} is {len(value):,} characters long, more than {MAX_TEXT_CHARS}")
    if not value.isascii():  # ASCII always encodes: the usual id skips the encoding attempt
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidEvent(
                f"field {name!r} holds an unpaired surrogate (\\u{ord(value[error.start]):04x}), not encodable as UTF-8"
            ) from None
    return value


def _time(record: dict[str, Any], name: str, bounds: TimeBounds) -> int:
    if name not in record:
        raise InvalidEvent(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEvent(f"field {name!r} must be integer epoch milliseconds, got {type(value).__name__}")
    if not bounds.earliest_ms <= value <= bounds.latest_ms:
        shown = str(value)
        if len(shown) > 30:  # a 4,000-digit number would swamp the reason
            shown = f"a {len(shown.lstrip('-')):,}-digit number"
        raise InvalidEvent(f"field {name!r} = {shown} is an absurd time ({_describe_ms(value)})")
    return value


def _describe_ms(value: int) -> str:
    try:
        return datetime.fromtimestamp(value / 1000, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return "out of any calendar"


def _excerpt(value: Any) -> str:
    """``repr`` of a received value, cut to a readable length (``repr`` escapes surrogates: reasons stay UTF-8)."""
    shown = repr(value)
    return shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown):,} characters)"


def parse_event(record: Any, kind: EventKind, bounds: TimeBounds) -> Event:
    """Validate one decoded JSON value as an event of ``kind``."""
    if not isinstance(record, dict):
        raise InvalidEvent(f"a {kind} event must be a JSON object, got {type(record).__name__}")
    text = {name: _text(record, name) for name in _TEXT_FIELDS[kind]}
    ts = _time(record, "ts", bounds)
    if kind == "request":
        return RequestEvent(ts=ts, **text)
    request_ts = _time(record, "request_ts", bounds) if record.get("request_ts") is not None else None
    return SuccessEvent(ts=ts, request_ts=request_ts, **text)


def _refuse_constant(name: str) -> Any:
    raise InvalidEvent(f"not valid JSON: {name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
"""Built once: ``json.loads`` with a keyword argument would build a decoder per record."""


def _decode_json(text: str) -> Any:
    """Standard JSON only; every way ``json`` can fail becomes an :class:`InvalidEvent` naming the cause."""
    if text.startswith("\ufeff"):
        raise InvalidEvent("starts with a UTF-8 byte-order mark (EF BB BF); the contract is plain UTF-8 without one")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as error:
        line = f"line {error.lineno} " if error.lineno > 1 else ""
        raise InvalidEvent(f"not valid JSON: {error.msg} at {line}column {error.colno}") from None
    except InvalidEvent:
        raise
    except ValueError as error:  # the only other: int() refusing a number past sys.get_int_max_str_digits()
        raise InvalidEvent(f"not valid JSON: a number too long to convert ({str(error).split(';')[0]})") from None
    except RecursionError:
        raise InvalidEvent("not valid JSON: nested too deeply to parse") from None


def _decode_utf8(value: bytes) -> str:
    """Strict UTF-8, as the contract says: ``json.loads(bytes)`` would guess UTF-16/32 and accept them."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        for mark, encoding in _BYTE_ORDER_MARKS:
            if value.startswith(mark):
                raise InvalidEvent(f"not UTF-8: looks like {encoding}; the contract is UTF-8") from None
        raise InvalidEvent(f"not UTF-8: {error.reason} (0x{value[error.start]:02x}) at byte {error.start}") from None


REASON_CATEGORIES = ("encoding", "json", "shape", "missing_field", "bad_field", "time", "empty")
"""What a dead letter's reason is about, in a few words that stay few: the ``reason`` label of the metrics."""

_CATEGORY_OF_PREFIX = (
    ("not UTF-8", "encoding"),
    ("starts with a UTF-8 byte-order mark", "encoding"),
    ("not valid JSON", "json"),
    ("empty JSON array", "shape"),
    ("record has no value", "empty"),
    ("missing field", "missing_field"),
)


@dataclass(frozen=True)
class Rejected:
    """A refused record, or one refused element of an array record, with the reason."""

    reason: str
    payload: bytes
    """The record's bytes as received; for an array element, that element re-encoded as ASCII JSON."""

    @property
    def category(self) -> str:
        """One of :data:`REASON_CATEGORIES`, for counting refusals by kind without a label per message.

        Example:
            >>> Rejected("element 3: missing field 'ts'", b"").category
            'missing_field'
            >>> Rejected("not UTF-8: looks like UTF-16; the contract is UTF-8", b"").category
            'encoding'
        """
        reason = re.sub(r"^element \d+: ", "", self.reason)
        for prefix, category in _CATEGORY_OF_PREFIX:
            if reason.startswith(prefix):
                return category
        if " must be a JSON object" in reason:
            return "shape"
        if "absurd time" in reason or "epoch milliseconds" in reason:
            return "time"
        if "surrogate" in reason:
            return "encoding"
        return "bad_field"


def parse_record(value: bytes | None, kind: EventKind, bounds: TimeBounds) -> tuple[list[Event], list[Rejected]]:
    """Validate one Kafka record's value: an event object, or a JSON array of events of one kind.

    Never raises, whatever the bytes: what is not a valid event is refused
    with the reason, so one bad record cannot stop a batch. A bad element of
    an array is refused on its own (``element 3: missing field 'ts'``) and the
    rest of the array still counts.

    Example:
        >>> bounds = TimeBounds(0, 2_000_000_000_000)
        >>> good = '{"event_id": "r-1", "app_id": "a", "room_id": "1", "user_id": "u", "ts": 5}'
        >>> events, rejected = parse_record(f'[{good}, {{"event_id": 7}}]'.encode(), "request", bounds)
        >>> len(events), rejected[0].reason, rejected[0].payload
        (1, "element 1: field 'event_id' must be a string, got int", b'{"event_id": 7}')
    """
    if value is None:
        return [], [Rejected("record has no value (a tombstone)", b"")]
    plain = _parse_plain(value, kind, bounds)
    if plain is not None:
        return plain, []
    return _parse_full(value, kind, bounds)


def _parse_full(value: bytes, kind: EventKind, bounds: TimeBounds) -> tuple[list[Event], list[Rejected]]:
    """Every rule, each refusal named: for any record the plain path does not take."""
    try:
        decoded = _decode_json(_decode_utf8(value))
    except InvalidEvent as error:
        return [], [Rejected(str(error), value)]
    if not isinstance(decoded, list):
        try:
            return [parse_event(decoded, kind, bounds)], []
        except InvalidEvent as error:
            return [], [Rejected(str(error), value)]
    if not decoded:
        return [], [Rejected("empty JSON array", value)]
    events: list[Event] = []
    rejected: list[Rejected] = []
    for index, element in enumerate(decoded):
        try:
            events.append(parse_event(element, kind, bounds))
        except InvalidEvent as error:
            # ensure_ascii escapes an unpaired surrogate instead of failing on it. Called right here
            # (not from a helper), encoding this element, a level shallower than the record, takes no
            # more stack than parsing the record did: it cannot hit the recursion limit.
            payload = json.dumps(element, ensure_ascii=True).encode("ascii")
            rejected.append(Rejected(f"element {index}: {error}", payload))
    return events, rejected


_PLAIN_DECODERS = {
    "request": msgspec.json.Decoder(RequestEvent | list[RequestEvent]),
    "success": msgspec.json.Decoder(SuccessEvent | list[SuccessEvent]),
}
"""msgspec decoders of the plain form: exactly the contract's fields, ids of 1 to 256 characters, integer times."""


def _parse_plain(value: bytes, kind: EventKind, bounds: TimeBounds) -> list[Event] | None:
    """The usual record, validated fast; None for anything else, which the full rules then judge and name.

    Why: the full rules (Python's ``json`` and a check per field) cost most of
    the time an event takes to count; msgspec decodes and type-checks the
    usual record straight into events, in C, several times faster. Why it is
    exact: it accepts only a subset of what the full rules accept, with the
    same events. The record must be ASCII without a single escape (so every
    id is ASCII text as written: no lone surrogate, nothing that is not
    UTF-8, no byte-order mark), hold the contract's fields and no others (an
    unknown field could hold what Python's ``json`` refuses, such as an
    over-long number), ids of 1 to 256 characters and integer times within
    bounds. A duplicated key keeps its last value in both parsers.
    ``tests/unit/test_plain_records.py`` checks the subset property.
    """
    if not value.isascii() or b"\\" in value:
        return None
    try:
        decoded = _PLAIN_DECODERS[kind].decode(value)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    events = decoded if isinstance(decoded, list) else [decoded]
    if not events:
        return None
    earliest, latest = bounds.earliest_ms, bounds.latest_ms
    if kind == "request":
        for event in events:
            if not earliest <= event.ts <= latest:
                return None
        return events
    for event in events:
        request_ts = event.ts if event.request_ts is None else event.request_ts
        if not (earliest <= event.ts <= latest and earliest <= request_ts <= latest):
            return None
    return events


def parse_line(line: str, bounds: TimeBounds) -> Event:
    """Validate one JSON Lines record of an event file, which names its ``type``.

    The same rules as :func:`parse_record` from JSON on; decoding the file's
    bytes is the caller's.
    """
    record = _decode_json(line)
    if not isinstance(record, dict):
        raise InvalidEvent(f"an event line must be a JSON object, got {type(record).__name__}")
    kind = record.get("type")
    if kind not in ("request", "success"):
        raise InvalidEvent(f'field \'type\' must be "request" or "success", got {_excerpt(kind)}')
    return parse_event(record, kind, bounds)


def parse_file_line(raw: bytes, bounds: TimeBounds) -> Event | None:
    """One line of an event file as read, its newline included: the event, or None for a blank line.

    The rules of a file line: strict UTF-8 (else ``not valid UTF-8 at byte N``),
    a line of nothing but whitespace is skipped, and the rest is
    :func:`parse_line`'s; :class:`InvalidEvent` names the rule broken. The
    usual line goes through the plain path first (:func:`_parse_plain_line`):
    what it accepts, the rules accept too, with the same event.

    Example:
        >>> bounds = TimeBounds(0, 2_000_000_000_000)
        >>> parse_file_line(b'{"type":"request","event_id":"r-1","app_id":"a","room_id":"1","user_id":"u","ts":5}\\n',
        ...                 bounds).event_id
        'r-1'
        >>> parse_file_line(b"  \\r\\n", bounds) is None
        True
        >>> parse_file_line(b'{"type": "request", "event_id": "\\xff"}\\n', bounds)
        Traceback (most recent call last):
        ...
        stream.events.InvalidEvent: not valid UTF-8 at byte 33
    """
    plain = _parse_plain_line(raw, bounds)
    if plain is not None:
        return plain
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidEvent(f"not valid UTF-8 at byte {error.start}") from None
    if not line.strip():
        return None
    return parse_line(line, bounds)


_LINE_PREFIXES: tuple[tuple[bytes, bytes], ...] = (
    (b'{"type":"request",', b'{"type":"success",'),  # to_line's compact form, what sla-stream simulate writes
    (b'{"type": "request", ', b'{"type": "success", '),  # json.dumps's default separators
)
"""How a usual line starts: its ``type`` first. Without it, the line is the record the plain path takes."""


def _parse_plain_line(raw: bytes, bounds: TimeBounds) -> Event | None:
    """The plain path for one file line: the event, or None for the full rules to judge.

    A line that starts with one of :data:`_LINE_PREFIXES` is, without its
    ``type``, a record (``{`` and the rest of the line): the plain path judges
    that. Why exact: the record must hold the contract's fields and no others,
    so no second ``type`` hides in the rest, and the line is then the same
    JSON object with ``type`` added.
    """
    for request_prefix, success_prefix in _LINE_PREFIXES:
        if raw.startswith(request_prefix):
            events = _parse_plain(b"{" + raw[len(request_prefix) :], "request", bounds)
        elif raw.startswith(success_prefix):
            events = _parse_plain(b"{" + raw[len(success_prefix) :], "success", bounds)
        else:
            continue
        return events[0] if events is not None and len(events) == 1 else None
    return None


def parse_plain_lines(
    lines: Sequence[bytes], bounds: TimeBounds
) -> tuple[list[RequestEvent], list[SuccessEvent]] | None:
    """Many usual lines of an event file (without their newlines) at once: their requests and their successes.

    None when any line is not a usual line (:func:`_parse_plain_line` would
    not take it); then each line goes through :func:`parse_file_line`, which
    names what is wrong. Each list keeps the lines' order.

    Why: a file line costs most of its time in Python around the parser. The
    lines of one kind are handed to the plain path as one JSON array, so
    msgspec decodes and checks them all in one call, in C. Why exact: the
    array is ``[`` + each line without its ``type`` prefix (a record starting
    with ``{``), joined by ``\\n,`` + ``]``. A JSON string cannot hold a raw
    newline, and an accepted element is a flat object (ids and times), in
    which a ``{`` outside a string cannot appear; so each ``\\n,{`` is the
    boundary between two elements, and with as many elements as lines each
    line holds exactly one, the one the plain path would decode from it
    alone. A line holding a newline of its own would break this: then None.

    Example:
        >>> bounds = TimeBounds(0, 2_000_000_000_000)
        >>> fields = '"app_id":"a","room_id":"1","user_id":"u","ts":5'
        >>> requests, successes = parse_plain_lines([
        ...     b'{"type":"request","event_id":"r-1",' + fields.encode() + b"}",
        ...     b'{"type":"success","event_id":"s-1","request_id":"r-1",' + fields.encode() + b"}",
        ... ], bounds)
        >>> [e.event_id for e in requests], [e.event_id for e in successes]
        (['r-1'], ['s-1'])
        >>> parse_plain_lines([b'{"type":"request","event_id":"r-1"}'], bounds) is None
        True
    """
    if not lines:
        return [], []
    for request_prefix, success_prefix in _LINE_PREFIXES:
        if lines[0].startswith((request_prefix, success_prefix)):
            break
    else:
        return None
    cut = len(request_prefix)  # both prefixes of a pair are as long
    requests = [line[cut:] for line in lines if line.startswith(request_prefix)]
    successes = [line[cut:] for line in lines if line.startswith(success_prefix)]
    if len(requests) + len(successes) != len(lines):
        return None
    decoded_requests = _plain_array(requests, "request", bounds)
    decoded_successes = _plain_array(successes, "success", bounds)
    if decoded_requests is None or decoded_successes is None:
        return None
    return decoded_requests, decoded_successes  # type: ignore[return-value]  # each holds its kind only


def _plain_array(records: list[bytes], kind: EventKind, bounds: TimeBounds) -> list[Event] | None:
    """Records (each a line without its ``type`` prefix and its ``{``) through the plain path as one array."""
    if not records:
        return []
    array = b"[{" + b"\n,{".join(records) + b"]"
    if array.count(b"\n") != len(records) - 1:  # a line with a newline of its own
        return None
    events = _parse_plain(array, kind, bounds)
    return events if events is not None and len(events) == len(records) else None


_RECORD_FIELDS: dict[type, tuple[str, ...]] = {cls: cls.__struct_fields__ for cls in (RequestEvent, SuccessEvent)}


def to_record(event: Event) -> dict[str, Any]:
    """The event as the JSON object a Kafka record carries: its fields without ``type``; unknown ones left out."""
    return {name: value for name in _RECORD_FIELDS[type(event)] if (value := getattr(event, name)) is not None}


def to_line(event: Event) -> str:
    """The event as one JSON Lines record with its ``type``, the form event files use."""
    return json.dumps({"type": event.kind, **to_record(event)}, separators=(",", ":"))
