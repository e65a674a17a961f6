"""The wire formats (stream/formats.py) against their published JSON Schemas (docs/schemas/).

What the code emits must validate, for every kind of slot, refused record
and month; and the exemption schema must accept what the code accepts and
refuse what it refuses, so an operator who validates before producing is
never surprised. Emitted shapes on the real topics and in Redis are checked
too, in tests/integration (end to end, bad records).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schemas import NAMES, assert_valid, problems, validator

from stream.events import Rejected
from stream.formats import (
    DEAD_LETTER_SCHEMA,
    MONTH_SCHEMA,
    VERDICT_SCHEMA,
    DeadLetter,
    InvalidExemption,
    decode_exemption,
    month_summary,
    month_to_json,
    verdict_message,
)
from stream.sla.assessment import assess_month
from stream.sla.claims import WorkingDayCalendar
from stream.sla.exemptions import CLAUSES, MAX_NOTE_CHARS, Exemption
from stream.sla.judge import judge
from stream.sla.months import Subscription, calendar_month, service_months_in
from stream.sla.slots import SLOT_MS, day_start_ms
from stream.sla.verdict import SlotCounts

TZ = ZoneInfo("Asia/Shanghai")
MARCH_10 = day_start_ms(date(2019, 3, 10), TZ)
WINDOW = Exemption(MARCH_10, MARCH_10 + 3 * SLOT_MS, None, "announced-maintenance", "upgrade")


@pytest.mark.parametrize("name", NAMES)
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    assert validator(name).schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@settings(max_examples=200, deadline=None)
@given(
    requests=st.integers(0, 10**9),
    successes=st.integers(0, 10**9),
    slot=st.integers(3, 10_000),  # past the window
    revision=st.integers(1, 10**6),
    covered=st.booleans(),
)
def test_every_verdict_message_validates(requests: int, successes: int, slot: int, revision: int, covered: bool):
    slot_ms = MARCH_10 + slot * SLOT_MS if not covered else MARCH_10
    judged = judge("1400000001", slot_ms, SlotCounts(requests, successes), [WINDOW])
    key, value = verdict_message("1400000001", judged, revision, 1_795_000_000_000, TZ)
    message = json.loads(value)
    assert_valid("verdict", message)
    assert message["schema"] == VERDICT_SCHEMA and key == f"1400000001:{slot_ms}"
    assert message["exempt"] == (judged.verdict.unavailable and covered)


def test_a_message_the_schema_refuses() -> None:
    """The schema is not a formality: a message with a float count or a missing revision is refused."""
    _, value = verdict_message("a", judge("a", MARCH_10, SlotCounts(3, 2), []), 1, 1, TZ)
    message = json.loads(value)
    assert problems("verdict", {**message, "requests": 3.5})
    assert problems("verdict", {k: v for k, v in message.items() if k != "revision"})
    assert problems("verdict", {**message, "schema": "sla-stream/verdict/2"})


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=3000), reason=st.text(min_size=1, max_size=3000), offset=st.integers(0, 2**62))
def test_every_dead_letter_validates(payload: bytes, reason: str, offset: int) -> None:
    letter = json.loads(DeadLetter("t", 3, offset, Rejected(reason, payload)).value())
    assert_valid("dead-letter", letter)
    assert letter["schema"] == DEAD_LETTER_SCHEMA


def test_a_huge_and_a_binary_dead_letter_validate() -> None:
    for payload in ('"' * 1_000_000).encode(), bytes(range(256)) * 1000, "{}".encode("utf-16"):
        letter = json.loads(DeadLetter("requests", 0, 7, Rejected("bad " * 500, payload)).value())
        assert_valid("dead-letter", letter)


def _months() -> list[dict]:
    """Months of every kind: on target, breached with a fee, exempt periods, a partial service month."""
    calendar = WorkingDayCalendar()
    ten = MARCH_10 + 120 * SLOT_MS
    good = {ten + i * SLOT_MS: SlotCounts(100, 100) for i in range(50)}
    bad = {ten + i * SLOT_MS: SlotCounts(100, 50 if i % 2 else 100) for i in range(200)}
    covered = {MARCH_10 + i * SLOT_MS: SlotCounts(10, 0) for i in range(3)}
    data_quality = {ten: SlotCounts(0, 3)}
    march = calendar_month(2019, 3)
    partial = service_months_in(2019, 3, (Subscription(date(2019, 3, 17), 1),))[0]
    assessments = [
        assess_month("a", march, good, (), calendar),
        assess_month("b", march, {**bad, **covered}, (WINDOW,), calendar, Decimal("1234.50")),
        assess_month("c", march, data_quality, (), calendar, Decimal("0.00")),
        assess_month("d", partial, good, (), calendar, Decimal("10")),
    ]
    return [month_to_json(a, TZ) for a in assessments]


def test_every_kind_of_month_validates() -> None:
    months = _months()
    for month in months:
        assert_valid("month", month)
        assert month["schema"] == MONTH_SCHEMA
    breached = months[1]
    assert breached["exempt_periods"] and breached["unavailable_periods"]
    assert breached["compensation"]["voucher"] is not None and not breached["meets_sla"]
    summary = month_summary(breached)
    assert (summary.first_day, summary.slots_left) == (date(2019, 3, 1), breached["error_budget"]["slots_left"])


def test_money_as_a_float_is_refused_by_the_month_schema() -> None:
    month = _months()[1]
    month["compensation"]["voucher"] = 123.45
    assert problems("month", month)


def test_money_is_written_in_plain_notation() -> None:
    """A fee given as 1E+3 (config accepts "1e3") is written 1000, as the schema's pattern asks."""
    march = calendar_month(2019, 3)
    month = month_to_json(assess_month("a", march, {}, (), WorkingDayCalendar(), Decimal("1E+3")), TZ)
    assert month["compensation"]["monthly_fee"] == "1000"
    assert_valid("month", month)


EXEMPTIONS_ACCEPTED = [
    {"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "force-majeure"},
    {"app_id": None, "start": "2026-10-27T02:00:00Z", "end": "2026-10-27T03:00:00.250Z", "clause": "attack"},
    {
        "app_id": "1400000001",
        "start": "2026-10-27T02:00:00+08:00",
        "end": "2026-10-27T02:00:01+08:00",
        "clause": "announced-maintenance",
        "note": "upgrade",
        "schema": "sla-stream/exemption/1",
    },
    {"start": "2026-10-27T02:00:00Z", "end": "2026-10-27T03:00:00Z", "clause": "attack", "note": "n" * MAX_NOTE_CHARS},
]
EXEMPTIONS_REFUSED = [
    {
        "start": "2026-10-27T02:00:00Z",
        "end": "2026-10-27T03:00:00Z",
        "clause": "attack",
        "note": "n" * (MAX_NOTE_CHARS + 1),
    },
    {"start": "2026-10-27T02:00:00", "end": "2026-10-27T03:00:00+08:00", "clause": "force-majeure"},
    {"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "weather"},
    {"start": "2026-10-27T02:00:00+08:00", "clause": "force-majeure"},
    {"app_id": "", "start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {"app_id": 7, "start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack", "note": 1},
    ["not", "an", "object"],
    {"start": "2026-10-27T02:00:00+0800", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {"start": "2026-10-27 02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {"start": "2026-10-27T02:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {"start": "2026-10-27T02:00:00+08", "end": "2026-10-27T03:00:00+08:00", "clause": "attack"},
    {
        "start": "2026-10-27T02:00:00+08:00",
        "end": "2026-10-27T03:00:00+08:00",
        "clause": "attack",
        "schema": "sla-stream/exemption/2",
    },
    {"start": "2026-10-27T02:00:00+08:00", "end": "2026-10-27T03:00:00+08:00", "clause": "attack", "schema": 5},
]


@pytest.mark.parametrize("record", EXEMPTIONS_ACCEPTED)
def test_an_exemption_the_code_accepts_the_schema_accepts(record: dict) -> None:
    decode_exemption(json.dumps(record).encode())
    assert_valid("exemption", record)


@pytest.mark.parametrize("record", EXEMPTIONS_REFUSED)
def test_an_exemption_the_code_refuses_the_schema_refuses(record: object) -> None:
    with pytest.raises(InvalidExemption):
        decode_exemption(json.dumps(record).encode())
    assert problems("exemption", record)


def test_the_exemption_schema_lists_the_agreements_clauses() -> None:
    assert validator("exemption").schema["properties"]["clause"]["enum"] == list(CLAUSES)
