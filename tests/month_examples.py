"""A month of per-slot counts with everything a month page shows, for the month page's tests.

October 2026 for one app, in Asia/Shanghai: traffic that peaks in the
afternoon and is quiet at night (a few night slots without any), slots at
100%, just under it and just over 99%, and:

* an incident on 14 October 10:00–10:30 at 90%: 6 unavailable slots (under 95%);
* an incident on 21 October 20:00–22:00 at 98%: 24 unavailable slots (95% to 99%);
* maintenance on 27 October 02:00–03:00 at 50%, covered by an exemption: 12 exempt slots;
* one data-quality slot (more successes than requests) on 9 October at 12:00.

30 unavailable slots: 99.66%, below 99.9%, the 10% tier; with a fee of 1000.00 the voucher is 100.00.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from stream.formats import statement_to_json
from stream.sla.claims import WorkingDayCalendar
from stream.sla.coverage import MINUTE_MS, MinuteMap
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, calendar_month
from stream.sla.policy import SlaPolicy
from stream.sla.slots import SLOT_MS, day_start_ms, local_time, slots_between, to_epoch_ms
from stream.sla.verdict import SlotCounts
from stream.statements.statement import Source, Statement, build_statement

SHANGHAI = ZoneInfo("Asia/Shanghai")
APP = "1400000002"
OCTOBER = calendar_month(2026, 10)
FEE = Decimal("1000.00")


def at(text: str, tz: ZoneInfo = SHANGHAI) -> int:
    """Epoch ms of a local time given as ``YYYY-MM-DDTHH:MM``."""
    return to_epoch_ms(datetime.fromisoformat(text).replace(tzinfo=tz))


INCIDENTS = (
    (at("2026-10-14T10:00"), at("2026-10-14T10:30"), Fraction(90, 100)),
    (at("2026-10-21T20:00"), at("2026-10-21T22:00"), Fraction(98, 100)),
    (at("2026-10-27T02:00"), at("2026-10-27T03:00"), Fraction(50, 100)),
)
MAINTENANCE = Exemption(
    at("2026-10-27T02:00"), at("2026-10-27T03:00"), APP, "announced-maintenance", "media cluster upgrade"
)
DATA_QUALITY_SLOT = at("2026-10-09T12:00")


def traffic(month: ServiceMonth = OCTOBER, tz: ZoneInfo = SHANGHAI, seed: int = 7) -> dict[int, SlotCounts]:
    """Per-slot counts of the month as described above (the same for the same seed)."""
    rng = random.Random(seed)
    counts: dict[int, SlotCounts] = {}
    start_ms, end_ms = month.span_ms(tz)
    for slot_ms in slots_between(start_ms, end_ms, tz):
        moment = local_time(slot_ms, tz)
        hour = moment.hour + moment.minute / 60
        requests = int(8 + 1400 * math.exp(-(((hour - 16) / 4.5) ** 2)) + rng.randint(0, 20))
        incident = next((rate for first, last, rate in INCIDENTS if first <= slot_ms < last), None)
        if 2 <= hour < 5 and rng.random() < 0.08 and incident is None:
            continue  # a quiet night slot: nothing at all
        successes = requests
        roll = rng.random()
        if roll < 0.04 and requests >= 150:
            successes = requests - requests // 150  # just over 99%
        elif roll < 0.25 and requests >= 1000:
            successes = requests - 1  # 99.9% or more
        if incident is not None:
            successes = int(requests * incident)
        if slot_ms == DATA_QUALITY_SLOT:
            successes = requests + 3
        counts[slot_ms] = SlotCounts(requests, successes)
    return counts


def covered_until(month: ServiceMonth, tz: ZoneInfo, as_of_ms: int | None = None) -> dict[str, Any]:
    """``build_statement``'s coverage arguments for input with an event in every minute of ``month``'s calendar
    month up to ``as_of_ms`` (None: the month's end, the month over)."""
    start_ms, end_ms = calendar_month(month.first_day.year, month.first_day.month).span_ms(tz)
    until_ms = end_ms if as_of_ms is None else as_of_ms
    covered = MinuteMap(start_ms, end_ms)
    covered.add_minutes(range(start_ms // MINUTE_MS, until_ms // MINUTE_MS))
    return {"covered": covered, "as_of_ms": until_ms}


def october_statement(source: Source = "report", revisions: dict[int, int] | None = None) -> Statement:
    """The example month's statement, with the maintenance exemption and a fee on record."""
    return build_statement(
        APP,
        OCTOBER,
        traffic(),
        (MAINTENANCE,),
        WorkingDayCalendar(),
        FEE,
        SlaPolicy(),
        source,
        revisions=revisions,
        **covered_until(OCTOBER, SHANGHAI),
    )


def quiet_statement(
    month: ServiceMonth, tz: ZoneInfo, app_id: str = APP, exemptions: tuple[Exemption, ...] = ()
) -> Statement:
    """A service month with one bad slot on its first day at 10:00 (and nothing else), in ``tz``."""
    ten = day_start_ms(month.first_day, tz) + 120 * SLOT_MS
    counts = {ten: SlotCounts(100, 50)}
    return build_statement(
        app_id,
        month,
        counts,
        exemptions,
        WorkingDayCalendar(),
        None,
        SlaPolicy(timezone=tz),
        "report",
        **covered_until(month, tz),
    )


def service_month(first: date, last: date) -> ServiceMonth:
    return ServiceMonth(first, last)


def live_statement(now_ms: int, grace_ms: int = 120_000) -> Statement:
    """The example month as the live stream holds it at ``now_ms``: traffic up to then, the last slots still open.

    A slot is closed (has a revision) once ``now_ms`` passed its end plus ``grace_ms``.
    """
    counts = {slot_ms: c for slot_ms, c in traffic().items() if slot_ms <= now_ms}
    revisions = {slot_ms: 1 for slot_ms in counts if slot_ms + SLOT_MS + grace_ms <= now_ms}
    return build_statement(
        APP,
        OCTOBER,
        counts,
        (MAINTENANCE,),
        WorkingDayCalendar(),
        FEE,
        SlaPolicy(),
        "live",
        revisions=revisions,
        **covered_until(OCTOBER, SHANGHAI, now_ms),
    )


FIGURE_FIELDS = {
    "availability_display": ("availability_display",),
    "availability_exact": ("availability_exact",),
    "meets_sla": ("meets_sla",),
    "slots_allowed": ("error_budget", "slots_allowed"),
    "slots_used": ("error_budget", "slots_used"),
    "slots_left": ("error_budget", "slots_left"),
    "unavailable_slots": ("unavailable_slots",),
    "unavailable_minutes": ("unavailable_minutes",),
    "exempt_slots": ("exempt_slots",),
    "data_quality_slots": ("data_quality_slots",),
    "requests": ("requests",),
    "successes": ("successes",),
    "compensation_percent": ("compensation", "percent"),
    "monthly_fee": ("compensation", "monthly_fee"),
    "voucher": ("compensation", "voucher"),
    "claim_opens": ("claim_window", "opens"),
    "claim_closes": ("claim_window", "closes"),
    "claim_estimated": ("claim_window", "estimated"),
    "running": ("running",),
    "as_of": ("as_of",),
    "coverage_complete": ("coverage", "complete"),
    "silent_minutes": ("coverage", "silent_minutes"),
    "covered_from": ("coverage", "covered_from"),
    "covered_until": ("coverage", "covered_until"),
}
"""Where each ``data-figure`` of a month page is in the JSON report (written out here, not taken from the page's
module, so a figure shown under the wrong name fails)."""


def expected_figures(statement: Statement) -> dict[str, str]:
    """Each ``data-figure``'s text as the JSON report gives its value, and the digest."""
    figures = statement_to_json(statement)
    expected = {}
    for name, path in FIGURE_FIELDS.items():
        value: Any = figures
        for key in path:
            value = value[key]
        expected[name] = (
            ("true" if value else "false") if isinstance(value, bool) else "" if value is None else str(value)
        )
    expected["digest"] = statement.digest
    return expected
