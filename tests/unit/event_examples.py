"""The event contract's examples (docs/design.md, "The event contract"), shared by the unit tests of parsing."""

from __future__ import annotations

from stream.events import TimeBounds

EARLIEST = 946_684_800_000  # 2000-01-01T00:00Z
LATEST = 1_800_000_000_000  # 2027-01-15
BOUNDS = TimeBounds(earliest_ms=EARLIEST, latest_ms=LATEST)

REQUEST = {"event_id": "r-123", "app_id": "1400000001", "room_id": "42", "user_id": "u1", "ts": 1552183200000}
SUCCESS = {
    "event_id": "s-123",
    "request_id": "r-123",
    "app_id": "1400000001",
    "room_id": "42",
    "user_id": "u1",
    "ts": 1552183200400,
    "request_ts": 1552183200000,
}
EXAMPLES = {"request": REQUEST, "success": SUCCESS}
