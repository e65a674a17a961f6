"""The event contract (DESIGN.md): room-entry requests and successes, and their validation.

Every check names what was wrong, so a dead-lettered record or a skipped file
line can be fixed at its source. ``ts`` and ``request_ts`` are integer epoch
milliseconds; a time outside :class:`TimeBounds` is refused as absurd.

Example:
    >>> bounds = TimeBounds(earliest_ms=0, latest_ms=2_000_000_000_000)
    >>> parse_line('{"type": "request", "event_id": "r-1", "app_id": "1400000001", '
    ...            '"room_id": "42", "user_id": "u1", "ts": 1552183200000}', bounds).app_id
    '1400000001'
    >>> parse_line('{"type": "request", "event_id": "r-1"}', bounds)
    Traceback (most recent call last):
    ...
    stream.events.InvalidEvent: missing field 'app_id'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from stream.sla.counting import EventKind, counted_time


class InvalidEvent(ValueError):
    """A record that breaks the event contract; the message says which rule."""


@dataclass(frozen=True)
class TimeBounds:
    """The range of event times accepted as plausible, ``[earliest_ms, latest_ms]``."""

    earliest_ms: int
    latest_ms: int


@dataclass(frozen=True, slots=True)
class RequestEvent:
    event_id: str
    app_id: str
    room_id: str
    user_id: str
    ts: int

    kind: EventKind = "request"

    @property
    def counted_ts(self) -> int:
        return self.ts


@dataclass(frozen=True, slots=True)
class SuccessEvent:
    event_id: str
    request_id: str
    app_id: str
    room_id: str
    user_id: str
    ts: int
    request_ts: int | None = None

    kind: EventKind = "success"

    @property
    def counted_ts(self) -> int:
        """The request's time when known: a success counts in its request's slot."""
        return counted_time(self.ts, self.request_ts)


Event = RequestEvent | SuccessEvent

_TEXT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    "request": ("event_id", "app_id", "room_id", "user_id"),
    "success": ("event_id", "request_id", "app_id", "room_id", "user_id"),
}


def _text(record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise InvalidEvent(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent(f"field {name!r} is empty")
    return value


def _time(record: dict[str, Any], name: str, bounds: TimeBounds) -> int:
    if name not in record:
        raise InvalidEvent(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEvent(f"field {name!r} must be integer epoch milliseconds, got {type(value).__name__}")
    if not bounds.earliest_ms <= value <= bounds.latest_ms:
        raise InvalidEvent(f"field {name!r} = {value} is an absurd time ({_describe_ms(value)})")
    return value


def _describe_ms(value: int) -> str:
    try:
        return datetime.fromtimestamp(value / 1000, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return "out of any calendar"


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


def _decode_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidEvent(f"not valid JSON: {error.msg} at column {error.colno}") from None
    except (ValueError, RecursionError) as error:  # e.g. a 5000-digit number, bad UTF-8, nesting past the stack
        raise InvalidEvent(f"not decodable JSON: {str(error)[:80]}") from None


@dataclass(frozen=True)
class Rejected:
    """A refused record, or one refused element of an array record, with the reason."""

    reason: str
    payload: str
    """The refused text as received (for an array element: that element re-encoded)."""


def parse_record(value: bytes | None, kind: EventKind, bounds: TimeBounds) -> tuple[list[Event], list[Rejected]]:
    """Validate one Kafka record's value: an event object, or a JSON array of events of one kind.

    A bad element of an array is refused on its own (``element 3: missing
    field 'ts'``) and the rest of the array still counts.

    Example:
        >>> bounds = TimeBounds(0, 2_000_000_000_000)
        >>> good = '{"event_id": "r-1", "app_id": "a", "room_id": "1", "user_id": "u", "ts": 5}'
        >>> events, rejected = parse_record(f'[{good}, {{"event_id": 7}}]'.encode(), "request", bounds)
        >>> len(events), rejected[0].reason
        (1, "element 1: field 'event_id' must be a string, got int")
    """
    if value is None:
        return [], [Rejected("record has no value", "")]
    try:
        decoded = _decode_json(value)
    except InvalidEvent as error:
        return [], [Rejected(str(error), value.decode("utf-8", errors="replace"))]
    if not isinstance(decoded, list):
        try:
            return [parse_event(decoded, kind, bounds)], []
        except InvalidEvent as error:
            return [], [Rejected(str(error), value.decode("utf-8"))]
    if not decoded:
        return [], [Rejected("empty JSON array", "[]")]
    events: list[Event] = []
    rejected: list[Rejected] = []
    for index, element in enumerate(decoded):
        try:
            events.append(parse_event(element, kind, bounds))
        except InvalidEvent as error:
            rejected.append(Rejected(f"element {index}: {error}", json.dumps(element)))
    return events, rejected


def parse_line(line: str, bounds: TimeBounds) -> Event:
    """Validate one JSON Lines record of an event file, which names its ``type``."""
    record = _decode_json(line)
    if not isinstance(record, dict):
        raise InvalidEvent(f"an event line must be a JSON object, got {type(record).__name__}")
    kind = record.get("type")
    if kind not in ("request", "success"):
        raise InvalidEvent(f'field \'type\' must be "request" or "success", got {kind!r}')
    return parse_event(record, kind, bounds)


_RECORD_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(name for name in cls.__dataclass_fields__ if name != "kind") for cls in (RequestEvent, SuccessEvent)
}


def to_record(event: Event) -> dict[str, Any]:
    """The event as the JSON object a Kafka record carries: its fields without ``type``; unknown ones left out."""
    return {name: value for name in _RECORD_FIELDS[type(event)] if (value := getattr(event, name)) is not None}


def to_line(event: Event) -> str:
    """The event as one JSON Lines record with its ``type``, the form event files use."""
    return json.dumps({"type": event.kind, **to_record(event)}, separators=(",", ":"))
