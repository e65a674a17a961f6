"""The slot listing every statement carries, and its SHA-256 digest (docs/statements.md).

A statement lists each slot of the service month that had traffic. Its
**canonical listing** is one line per such slot, in time order, of six
fields joined by commas and ended by a newline (``\\n``)::

    app_id,service_month,slot_start,requests,successes,verdict

``service_month`` is ``first/last`` day (``2026-10-01/2026-10-31``),
``slot_start`` the slot's local start with its UTC offset
(``2026-10-14T10:00:00+08:00``), ``verdict`` one of ``ok``, ``unavailable``,
``exempt``, ``data-quality``. The **digest** is the SHA-256 of that text in
UTF-8, in lowercase hex. These are exactly the first six columns of the slot
CSV, so anyone can recompute the digest from it and compare it with the one
a statement prints: the same events give the same digest whether counted
live, replayed from Kafka or counted from files.

Example:
    >>> from zoneinfo import ZoneInfo
    >>> from stream.sla.months import calendar_month
    >>> line = SlotLine(1552183200000, SlotCounts(200, 197), Fraction(197, 200), "unavailable", None)
    >>> canonical_line("1400000001", calendar_month(2019, 3), line, ZoneInfo("Asia/Shanghai"))
    '1400000001,2019-03-01/2019-03-31,2019-03-10T10:00:00+08:00,200,197,unavailable\\n'
    >>> slot_digest("1400000001", calendar_month(2019, 3), (), ZoneInfo("Asia/Shanghai"))[:16]  # nothing listed
    'e3b0c44298fc1c14'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

from stream.sla.availability import truncated_decimal
from stream.sla.exemptions import Exemption
from stream.sla.judge import JudgedSlot
from stream.sla.months import ServiceMonth
from stream.sla.slots import local_time
from stream.sla.verdict import SlotCounts

Verdict = Literal["ok", "unavailable", "exempt", "data-quality"]
"""A slot's verdict as statements write it: ``exempt`` is unavailable by its counts but covered by an exemption;
``data-quality`` is more successes than requests (read as 100%, never unavailable)."""

RATE_DECIMALS = 6
"""Places a success rate is written to, truncated: never rounded up, so a rate below 99% never reads 0.99."""


def verdict_of(judged: JudgedSlot) -> Verdict:
    """The statement's name for a judged slot's verdict."""
    if judged.exempt:
        return "exempt"
    if judged.verdict.unavailable:
        return "unavailable"
    return "data-quality" if judged.verdict.data_quality_issue else "ok"


def rate_text(rate: Fraction | None) -> str:
    """A success rate as a plain decimal truncated to :data:`RATE_DECIMALS` places: no float noise.

    Example:
        >>> rate_text(Fraction(197, 200)), rate_text(Fraction(2, 3)), rate_text(Fraction(1)), rate_text(None)
        ('0.985', '0.666666', '1', '')
    """
    return "" if rate is None else truncated_decimal(rate, RATE_DECIMALS, trim=True)


@dataclass(frozen=True)
class SlotLine:
    """One slot with traffic, as every statement form lists it."""

    slot_ms: int
    counts: SlotCounts
    success_rate: Fraction | None
    """Successes over requests, capped at 1; None without requests."""
    verdict: Verdict
    exemption: Exemption | None
    """The exemption that covers it (an ``exempt`` slot only)."""
    revision: int | None = None
    """The live verdict's revision (live statements only); None: not closed yet, or not from the live state."""

    @property
    def success_rate_text(self) -> str:
        return rate_text(self.success_rate)


def service_month_text(month: ServiceMonth) -> str:
    """``first/last`` day of a service month, ISO 8601 (``2026-10-01/2026-10-31``)."""
    return f"{month.first_day.isoformat()}/{month.last_day.isoformat()}"


def slot_start_text(slot_ms: int, tz: ZoneInfo) -> str:
    """A slot's local start with its UTC offset (``2026-10-14T10:00:00+08:00``)."""
    return local_time(slot_ms, tz).isoformat()


def canonical_line(app_id: str, month: ServiceMonth, line: SlotLine, tz: ZoneInfo) -> str:
    """One slot's line of the canonical listing (the slot CSV's first six columns, unquoted)."""
    fields = (
        app_id,
        service_month_text(month),
        slot_start_text(line.slot_ms, tz),
        str(line.counts.requests),
        str(line.counts.successes),
        line.verdict,
    )
    return ",".join(fields) + "\n"


def slot_digest(app_id: str, month: ServiceMonth, lines: Iterable[SlotLine], tz: ZoneInfo) -> str:
    """SHA-256 (lowercase hex) of the canonical listing of ``lines`` (in time order)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(canonical_line(app_id, month, line, tz).encode("utf-8"))
    return digest.hexdigest()
