"""Exemption records on the exemptions topic (compacted, keyed by exemption id).

A record's value is a JSON object; a null value (tombstone) withdraws the
exemption with that key. Times are ISO 8601 with a UTC offset, so an
operator can write one by hand:

    {"app_id": "1400000001", "start": "2026-10-27T02:00:00+08:00",
     "end": "2026-10-27T03:00:00+08:00", "clause": "announced-maintenance",
     "note": "media cluster upgrade"}

``app_id`` null or absent exempts every app. Validation reuses
:class:`stream.sla.exemptions.Exemption`, so the topic and the config file
accept exactly the same exemptions.

Example:
    >>> e = exemption_from_json({"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00",
    ...                          "clause": "force-majeure"})
    >>> e.app_id is None, e.end_ms - e.start_ms
    (True, 3600000)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from stream.events import InvalidEvent
from stream.sla.exemptions import Exemption
from stream.sla.slots import SLOT_MS, to_epoch_ms
from stream.store import Store


def _instant(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, str):
        raise InvalidEvent(f"exemption field {name!r} must be an ISO 8601 time with offset")
    try:
        return to_epoch_ms(datetime.fromisoformat(value))
    except ValueError as error:
        raise InvalidEvent(f"exemption field {name!r}: {error}") from None


def exemption_from_json(record: Any) -> Exemption:
    """An exemption from its decoded JSON object, or ``InvalidEvent`` naming what is wrong."""
    if not isinstance(record, dict):
        raise InvalidEvent("an exemption must be a JSON object")
    app_id = record.get("app_id")
    if app_id is not None and (not isinstance(app_id, str) or not app_id):
        raise InvalidEvent("exemption field 'app_id' must be a non-empty string or null")
    note = record.get("note", "")
    if not isinstance(note, str) or not isinstance(record.get("clause"), str):
        raise InvalidEvent("exemption fields 'clause' and 'note' must be strings")
    try:
        return Exemption(_instant(record, "start"), _instant(record, "end"), app_id, record["clause"], note)
    except ValueError as error:
        raise InvalidEvent(str(error)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_exemption(value: bytes) -> dict[str, Any]:
    """A record's value decoded and checked to be a valid exemption; the dict is what Redis keeps."""
    try:
        record = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as error:
        raise InvalidEvent(f"exemption record is not UTF-8: {error.reason} at byte {error.start}") from None
    except (ValueError, RecursionError):
        raise InvalidEvent("exemption record is not valid JSON") from None
    exemption_from_json(record)
    return record


async def judge_windows_again(store: Store, exemptions: Iterable[Exemption]) -> None:
    """Mark every unavailable slot the given exemption windows touch for judging again.

    Called with both the old and the new form of a changed exemption, so
    slots leave an exemption as surely as they enter one.
    """
    apps = await store.apps()
    for exemption in exemptions:
        for app_id in [exemption.app_id] if exemption.app_id else sorted(apps):
            slots = await store.unavailable_slots(app_id, exemption.start_ms - SLOT_MS + 1, exemption.end_ms)
            await store.mark_dirty((app_id, slot_ms) for slot_ms in slots)
