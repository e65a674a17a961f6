"""The app series of ``/metrics`` as exposition text, rendered again only for the apps whose figures changed.

prometheus_client makes a sample object for every series and formats each
one at every scrape: at 10,000 apps (190,000 series) that took 2.6 s in its
text format and 4.6 s in OpenMetrics, the format Prometheus asks for first.
Here each app's lines (one string a family) are kept with the figures they
were rendered from; a scrape renders only the apps whose figures changed
since the last one and joins the rest, family by family. A quiet fleet's
scrape is then the joining alone. The text is Prometheus's text format 0.0.4
(which every Prometheus accepts, whatever it lists first).

Families, names and help texts are those docs/metrics.md lists; the ``app``
label's value is escaped as the format says (backslash, double quote, newline).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from prometheus_client.utils import floatToGoString

from stream.sla.verdict import judge_slot

if TYPE_CHECKING:
    from stream.live.metrics import AppSnapshot


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    help: str


FAMILIES = (
    Family("sla_month_availability_ratio", "gauge", "Running service month's availability (whole month's minutes)"),
    Family("sla_month_meets_target", "gauge", "1 while the month is at or above the target, compared exactly"),
    Family("sla_month_unavailable_slots", "gauge", "Unavailable slots counting against the month"),
    Family("sla_month_exempt_slots", "gauge", "Slots unavailable by counts but exempt"),
    Family("sla_month_budget_allowed_slots", "gauge", "Unavailable slots the month may have and still meet the target"),
    Family("sla_month_budget_used_slots", "gauge", "Unavailable slots used of the budget"),
    Family("sla_month_budget_remaining_slots", "gauge", "Budget left, never below 0"),
    Family(
        "sla_month_voucher_ratio", "gauge", "Share of the month's fee owed if the month ended now (0, 0.1, 0.2, 0.5)"
    ),
    Family("sla_month_start_timestamp_seconds", "gauge", "The service month's first instant"),
    Family("sla_month_end_timestamp_seconds", "gauge", "The instant after the service month's last"),
    Family("sla_open_slot_requests", "gauge", "Requests counted so far in the newest open slot"),
    Family("sla_open_slot_success_ratio", "gauge", "Success ratio so far in the newest open slot (capped at 1)"),
    Family("sla_open_slot_start_timestamp_seconds", "gauge", "The newest open slot's start"),
    Family(
        "sla_slots_closed_total", "counter", "Slots closed, by their first verdict: good, bad (unavailable) or exempt"
    ),
    Family("sla_calls_total", "counter", "Room-entry requests counted"),
    Family("sla_call_successes_total", "counter", "Room-entry successes counted"),
    Family("sla_calls_failed_total", "counter", "Requests without a success in their slot when it closed"),
)
"""Every app family, in the order a scrape lists them."""

_HEADERS = tuple(f"# HELP {f.name} {f.help}\n# TYPE {f.name} {f.kind}\n" for f in FAMILIES)


class AppSeries:
    """Each app's exposition lines, kept with the figures they were rendered from."""

    def __init__(self, timezone: ZoneInfo) -> None:
        self._timezone = timezone
        self._kept: dict[str, tuple[AppSnapshot, tuple[str, ...]]] = {}
        self._lock = threading.Lock()  # scrapes come on the web server's threads

    def text(self, apps: Mapping[str, AppSnapshot]) -> str:
        """The app families of ``apps`` (a snapshot's), rendering only the apps whose figures changed."""
        with self._lock:
            kept = {}
            for app_id, app in apps.items():
                found = self._kept.get(app_id)
                kept[app_id] = found if found is not None and found[0] == app else (app, self._render(app_id, app))
            self._kept = kept
            lines: list[list[str]] = [[] for _ in FAMILIES]
            for app_id in sorted(kept):
                for family, line in zip(lines, kept[app_id][1], strict=True):
                    if line:
                        family.append(line)
        return "".join(header + "".join(family) for header, family in zip(_HEADERS, lines, strict=True) if family)

    def _render(self, app_id: str, app: AppSnapshot) -> tuple[str, ...]:
        label = '{app="' + app_id.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"") + '"'
        month, slot, counters = app.month, app.open_slot, app.counters
        if month is None:
            month_lines = ("",) * 10
        else:
            start_ms, end_ms = month.month.span_ms(self._timezone)
            month_lines = tuple(
                f"{family.name}{label}}} {floatToGoString(value)}\n"
                for family, value in zip(
                    FAMILIES[:10],
                    (
                        _ratio(month.availability),
                        1.0 if month.meets_sla else 0.0,
                        month.unavailable_slots,
                        month.exempt_slots,
                        month.slots_allowed,
                        month.slots_used,
                        month.slots_left,
                        month.compensation_percent / 100,
                        start_ms / 1000,
                        end_ms / 1000,
                    ),
                    strict=True,
                )
            )
        if slot is None:
            slot_lines = ("",) * 3
        else:
            values = (slot.counts.requests, _ratio(judge_slot(slot.counts).success_rate), slot.start_ms / 1000)
            slot_lines = tuple(
                f"{family.name}{label}}} {floatToGoString(value)}\n"
                for family, value in zip(FAMILIES[10:13], values, strict=True)
            )
        closed = FAMILIES[13].name
        outcomes = "".join(
            f'{closed}{label},outcome="{outcome}"}} {floatToGoString(value)}\n'
            for outcome, value in (
                ("good", counters.good_slots),
                ("bad", counters.bad_slots),
                ("exempt", counters.exempt_slots),
            )
        )
        counter_lines = tuple(
            f"{family.name}{label}}} {floatToGoString(value)}\n"
            for family, value in zip(
                FAMILIES[14:], (counters.requests, counters.successes, counters.failed_calls), strict=True
            )
        )
        return (*month_lines, *slot_lines, outcomes, *counter_lines)


def _ratio(value: Fraction | None) -> float:
    return float("nan") if value is None else float(value)
