"""Every JSON shape sla-stream publishes or accepts, in one place: its wire formats.

=================  =====================================  ==========================================
shape              where it travels                        schema (``docs/schemas/``)
=================  =====================================  ==========================================
verdict message    slot-verdicts topic, key ``app:slot``   ``verdict.schema.json``
dead letter        dead-letter topic, key ``topic:p:o``    ``dead-letter.schema.json``
service month      ``sla-stream report --format json``,    ``month.schema.json``
                   the live month ledger in Redis,
                   the live month pages (``.json``)
exemption          exemptions topic (compacted), Redis     ``exemption.schema.json``
=================  =====================================  ==========================================

Each shape sla-stream writes carries ``"schema": "sla-stream/<shape>/<version>"``
(:data:`VERDICT_SCHEMA`, :data:`DEAD_LETTER_SCHEMA`, :data:`MONTH_SCHEMA`), so a
consumer can validate what it reads against the JSON Schema of that version
and notice a change of shape. The version changes when a field is
removed or changes meaning, or when every reader must read a new one
(``month/2``: a statement's ``coverage``); other new optional fields keep it. Exemptions are
written by operators, so their ``schema`` field is optional.

Nothing here does I/O: the live worker, the offline report and the tools
encode and decode through these functions, so no reader depends on another
module's private layout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec

from stream.events import Rejected
from stream.sla.assessment import MonthAssessment, Period
from stream.sla.availability import unavailable_minutes
from stream.sla.coverage import Coverage
from stream.sla.exemptions import Exemption
from stream.sla.judge import JudgedSlot
from stream.sla.months import ServiceMonth
from stream.sla.slots import instant_ms, local_time

if TYPE_CHECKING:  # statements build on this module (the page shows the JSON's figures), not the other way
    from stream.statements.statement import Statement

VERDICT_SCHEMA = "sla-stream/verdict/1"
DEAD_LETTER_SCHEMA = "sla-stream/dead-letter/1"
MONTH_SCHEMA = "sla-stream/month/2"
EXEMPTION_SCHEMA = "sla-stream/exemption/1"

# --- verdict messages -------------------------------------------------------------------------------------------


def verdict_message(app_id: str, judged: JudgedSlot, revision: int, generation: int, tz: ZoneInfo) -> tuple[str, str]:
    """The slot-verdicts record of a judged slot: key ``app:slot_start_ms``, compact JSON value.

    Example:
        >>> from zoneinfo import ZoneInfo
        >>> from stream.sla.judge import judge
        >>> from stream.sla.verdict import SlotCounts
        >>> slot = judge("1400000001", 1_552_183_200_000, SlotCounts(200, 197), [])
        >>> key, value = verdict_message("1400000001", slot, 1, 1, ZoneInfo("Asia/Shanghai"))
        >>> key
        '1400000001:1552183200000'
        >>> message = json.loads(value)
        >>> message["slot_start"], message["success_rate"], message["unavailable"], message["schema"]
        ('2019-03-10T10:00:00+08:00', 0.985, True, 'sla-stream/verdict/1')
    """
    verdict = judged.verdict
    rate = verdict.success_rate
    value = {
        "schema": VERDICT_SCHEMA,
        "app_id": app_id,
        "slot_start": _local_text(judged.slot_ms, tz),
        "slot_start_ms": judged.slot_ms,
        "generation": generation,
        "revision": revision,
        "requests": verdict.counts.requests,
        "successes": verdict.counts.successes,
        "success_rate": None if rate is None else float(rate),
        "unavailable": verdict.unavailable,
        "exempt": judged.exempt,
        "clause": judged.exemption.clause if judged.exemption else None,
        "data_quality": verdict.data_quality_issue,
    }
    return f"{app_id}:{judged.slot_ms}", msgspec.json.encode(value).decode()


@lru_cache(maxsize=1 << 16)
def _local_text(ts_ms: int, tz: ZoneInfo) -> str:
    """A time as local ISO 8601 text; cached, since every app's verdict at a slot boundary names the same start."""
    return local_time(ts_ms, tz).isoformat()


# --- dead letters -----------------------------------------------------------------------------------------------

MAX_PAYLOAD_BYTES = 64 * 1024
"""The most of a refused payload a letter carries: enough to see what went wrong, far below Kafka's 1 MB."""

MAX_REASON_CHARS = 1_000
"""The longest reason a letter carries; a longer one is cut and ends with an ellipsis."""


@dataclass(frozen=True)
class DeadLetter:
    """A refused record (or array element) and its origin, as sent to the dead-letter topic.

    Whatever a producer sent, its dead letter must reach Kafka: a letter the
    broker refuses would stop the batch that refused the record. So the value
    is always valid JSON (UTF-8) and stays under 100 KB, well under Kafka's
    default 1 MB message limit:

    * the payload is kept as text when the refused bytes are valid UTF-8, and
      as base64 when they are not (``payload_encoding`` says which);
    * at most :data:`MAX_PAYLOAD_BYTES` of it are kept: the first 64 KiB of
      the bytes for base64; for text, the longest prefix, cut between
      characters, whose JSON string form (escapes included) fits in 64 KiB;
    * ``payload_bytes`` and ``payload_sha256`` describe the original bytes, so
      a truncated payload (``payload_truncated``) can still be matched to its
      record;
    * the reason is capped at :data:`MAX_REASON_CHARS` characters.

    Example:
        >>> letter = DeadLetter("requests", 2, 41, Rejected("missing field 'ts'", b'{"event_id": "r-1"}'))
        >>> letter.key
        b'requests:2:41'
        >>> message = json.loads(letter.value())
        >>> message["reason"], message["offset"], message["payload"], message["payload_encoding"]
        ("missing field 'ts'", 41, '{"event_id": "r-1"}', 'utf-8')
        >>> message["payload_bytes"], message["payload_truncated"], message["payload_sha256"][:12]
        (19, False, 'f4d6b0bfbd45')
        >>> utf16 = DeadLetter("requests", 0, 7, Rejected("not UTF-8: looks like UTF-16", '{}'.encode("utf-16")))
        >>> message = json.loads(utf16.value())
        >>> message["payload"], message["payload_encoding"]
        ('//57AH0A', 'base64')
    """

    topic: str
    """The Kafka topic the record came from (a topic name: at most 249 ASCII characters)."""
    partition: int
    offset: int
    rejected: Rejected

    @property
    def key(self) -> bytes:
        """``topic:partition:offset``: unique per origin, so a letter sent twice after a crash is recognisable."""
        return f"{self.topic}:{self.partition}:{self.offset}".encode()

    def value(self) -> bytes:
        """The letter as a JSON object in UTF-8, under 100 KB whatever was refused."""
        original = self.rejected.payload
        payload, encoding, kept = _payload_field(original)
        reason = self.rejected.reason
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        message = {
            "schema": DEAD_LETTER_SCHEMA,
            "reason": reason,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "payload": payload,
            "payload_encoding": encoding,
            "payload_bytes": len(original),
            "payload_sha256": hashlib.sha256(original).hexdigest(),
            "payload_truncated": kept < len(original),
        }
        # Non-ASCII text stays as it is (a \u escape would triple it); a reason built by a caller from
        # received text may hold an unpaired surrogate, which becomes its JSON escape instead of an error.
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


def _payload_field(original: bytes) -> tuple[str, str, int]:
    """The payload as written in the letter, its ``payload_encoding``, and how many original bytes it holds."""
    try:
        original.decode("utf-8")
    except UnicodeDecodeError:
        kept = original[:MAX_PAYLOAD_BYTES]
        return base64.b64encode(kept).decode("ascii"), "base64", len(kept)
    cut = min(len(original), MAX_PAYLOAD_BYTES)
    while cut < len(original) and original[cut] & 0xC0 == 0x80:  # the byte after the cut continues a character
        cut -= 1
    text = _fitting_prefix(original[:cut].decode("utf-8"))
    return text, "utf-8", len(text.encode("utf-8"))


def _fitting_prefix(text: str) -> str:
    """The longest prefix of ``text`` whose JSON string form fits in :data:`MAX_PAYLOAD_BYTES`.

    Escaping grows text: a quote takes two bytes, a control character six, so
    64 KiB of text may need up to 384 KiB written out.
    """
    if _json_size(text) <= MAX_PAYLOAD_BYTES:
        return text
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if _json_size(text[:middle]) <= MAX_PAYLOAD_BYTES:
            fits = middle
        else:
            too_long = middle
    return text[:fits]


def _json_size(text: str) -> int:
    """Bytes ``text`` takes as the inside of a JSON string in a letter (quotes not counted)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


# --- exemptions -------------------------------------------------------------------------------------------------


class InvalidExemption(ValueError):
    """An exemption record that cannot be used; the message names the field and what is wrong."""


def exemption_from_json(record: Any) -> Exemption:
    """An exemption from its decoded JSON object, or :class:`InvalidExemption` naming what is wrong.

    Times are ISO 8601 with a UTC offset, so an operator can write one by hand;
    ``app_id`` null or absent exempts every app. Validation is
    :class:`stream.sla.exemptions.Exemption`'s, so the topic and the config file
    accept exactly the same exemptions.

    Example:
        >>> e = exemption_from_json({"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00",
        ...                          "clause": "force-majeure"})
        >>> e.app_id is None, e.end_ms - e.start_ms
        (True, 3600000)
        >>> try:
        ...     exemption_from_json({"start": "2026-10-27T02:00:00", "end": "2026-10-27T03:00:00+08:00",
        ...                          "clause": "force-majeure"})
        ... except InvalidExemption as error:
        ...     print(str(error)[:61])
        exemption field 'start' must be a time with seconds and a UTC
    """
    if not isinstance(record, dict):
        raise InvalidExemption("an exemption must be a JSON object")
    if "schema" in record and record["schema"] != EXEMPTION_SCHEMA:
        raise InvalidExemption(f"exemption field 'schema' must be {EXEMPTION_SCHEMA!r} when given")
    app_id = record.get("app_id")
    if app_id is not None and (not isinstance(app_id, str) or not app_id):
        raise InvalidExemption("exemption field 'app_id' must be a non-empty string or null")
    note = record.get("note", "")
    if not isinstance(note, str) or not isinstance(record.get("clause"), str):
        raise InvalidExemption("exemption fields 'clause' and 'note' must be strings")
    try:
        return Exemption(
            _time_with_offset(record, "start"), _time_with_offset(record, "end"), app_id, record["clause"], note
        )
    except ValueError as error:
        raise InvalidExemption(str(error)) from None


OFFSET_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
"""An exemption's ``start`` and ``end``: RFC 3339 (ISO 8601 with seconds and a UTC offset), as the schema says."""


def _time_with_offset(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    if not isinstance(value, str) or not OFFSET_TIME.fullmatch(value):
        raise InvalidExemption(
            f"exemption field {name!r} must be a time with seconds and a UTC offset, like 2026-10-27T02:00:00+08:00"
        )
    try:
        return instant_ms(value)
    except ValueError as error:
        raise InvalidExemption(f"exemption field {name!r}: {error}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_exemption(value: bytes) -> dict[str, Any]:
    """An exemption record's bytes decoded and checked to be a valid exemption; the dict is what Redis keeps."""
    try:
        record = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as error:
        raise InvalidExemption(f"exemption record is not UTF-8: {error.reason} at byte {error.start}") from None
    except (ValueError, RecursionError):
        raise InvalidExemption("exemption record is not valid JSON") from None
    exemption_from_json(record)
    return record


# --- service months ---------------------------------------------------------------------------------------------


def month_to_json(assessment: MonthAssessment, tz: ZoneInfo) -> dict[str, Any]:
    """One service month's figures: what ``report --format json`` prints and the live month ledger holds.

    Money is a decimal string (never a float); ``availability_exact`` is the
    exact fraction, ``availability`` a float for charts only.
    """
    month = assessment.month
    return {
        "schema": MONTH_SCHEMA,
        "app_id": assessment.app_id,
        "service_month": {"start": month.first_day.isoformat(), "end": month.last_day.isoformat(), "days": month.days},
        "timezone": tz.key,
        "total_minutes": month.total_minutes,
        "requests": assessment.requests,
        "successes": assessment.successes,
        "unavailable_slots": len(assessment.unavailable),
        "unavailable_minutes": unavailable_minutes(len(assessment.unavailable)),
        "exempt_slots": len(assessment.exempt),
        "data_quality_slots": assessment.data_quality_slots,
        "availability": float(assessment.availability),
        "availability_exact": str(assessment.availability),
        "availability_display": assessment.availability_display,
        "meets_sla": assessment.meets_sla,
        "error_budget": {
            "slots_allowed": assessment.budget.slots_allowed,
            "slots_used": assessment.budget.slots_used,
            "slots_left": assessment.budget.slots_left,
        },
        "compensation": {
            "percent": assessment.compensation_percent,
            "monthly_fee": _money(assessment.monthly_fee),
            "voucher": _money(assessment.voucher),
        },
        "claim_window": {
            "opens": assessment.claim.opens.isoformat(),
            "closes": assessment.claim.closes.isoformat(),
            "estimated": assessment.claim.estimated,
        },
        "unavailable_periods": [_period_json(p, tz) for p in assessment.unavailable_periods],
        "exempt_periods": [_period_json(p, tz) for p in assessment.exempt_periods],
    }


def statement_to_json(statement: Statement) -> dict[str, Any]:
    """A statement's figures (:func:`month_to_json`) with its ``digest``: what ``report``/``replay --format json``
    print and the live pages serve as ``.json``.

    The digest is the SHA-256 of the month's canonical slot listing
    (:mod:`stream.statements.listing`), recomputable from the slot CSV.
    ``running`` says the month had not ended when the figures were taken
    (``as_of``), and ``coverage`` what the input covers of it: its silent
    periods are "no data", not "no traffic" (:mod:`stream.sla.coverage`).
    """
    tz = statement.policy.timezone
    coverage = statement.coverage
    return {
        **month_to_json(statement.assessment, tz),
        "digest": statement.digest,
        "running": statement.running,
        "as_of": _time(coverage.as_of_ms, tz) if statement.running else None,
        "coverage": coverage_to_json(coverage, tz),
    }


def coverage_to_json(coverage: Coverage, tz: ZoneInfo) -> dict[str, Any]:
    """What the input covers of a statement's month (``coverage`` in ``sla-stream/month/2``)."""
    return {
        "measured_until": _time(coverage.end_ms, tz),
        "covered_from": None if coverage.first_ms is None else _time(coverage.first_ms, tz),
        "covered_until": None if coverage.last_ms is None else _time(coverage.last_ms, tz),
        "silent_after_minutes": coverage.silent_after_minutes,
        "silent_minutes": coverage.silent_minutes,
        "silent_periods": [
            {"start": _time(p.start_ms, tz), "end": _time(p.end_ms, tz), "minutes": p.minutes} for p in coverage.silent
        ],
        "complete": coverage.complete,
    }


def _time(ts_ms: int, tz: ZoneInfo) -> str:
    return local_time(ts_ms, tz).isoformat()


@dataclass(frozen=True)
class MonthSummary:
    """The running figures the live views show of a month ledger: ``/metrics``, the live index, ``watch``.

    Read back from :func:`month_to_json`'s object, so a view never recomputes what the closer's ledger holds.
    """

    first_day: date
    last_day: date
    availability: Fraction
    availability_display: str
    meets_sla: bool
    unavailable_slots: int
    exempt_slots: int
    slots_used: int
    slots_left: int
    slots_allowed: int
    compensation_percent: int

    @property
    def month(self) -> ServiceMonth:
        return ServiceMonth(self.first_day, self.last_day)


def month_summary(figures: Mapping[str, Any]) -> MonthSummary:
    """The summary of a month object written by :func:`month_to_json`."""
    budget = figures["error_budget"]
    return MonthSummary(
        first_day=date.fromisoformat(figures["service_month"]["start"]),
        last_day=date.fromisoformat(figures["service_month"]["end"]),
        availability=Fraction(figures["availability_exact"]),
        availability_display=figures["availability_display"],
        meets_sla=figures["meets_sla"],
        unavailable_slots=figures["unavailable_slots"],
        exempt_slots=figures["exempt_slots"],
        slots_used=budget["slots_used"],
        slots_left=budget["slots_left"],
        slots_allowed=budget["slots_allowed"],
        compensation_percent=figures["compensation"]["percent"],
    )


def _money(amount: Decimal | None) -> str | None:
    """A decimal string in plain notation (``1000.00``, never ``1E+3``)."""
    return None if amount is None else format(amount, "f")


def _period_json(period: Period, tz: ZoneInfo) -> dict[str, Any]:
    rate = period.lowest_success_rate
    record: dict[str, Any] = {
        "start": local_time(period.start_ms, tz).isoformat(),
        "end": local_time(period.end_ms, tz).isoformat(),
        "slots": period.slots,
        "lowest_success_rate": None if rate is None else float(rate),
    }
    if period.exemption is not None:
        record["clause"] = period.exemption.clause
        record["note"] = period.exemption.note
    return record
