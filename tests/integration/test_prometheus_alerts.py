"""The real Prometheus scrapes a worker through an incident: exact figures, budget and breach alerts, resolution.

An hour of traffic for two apps ending now, in the running service month;
app 1 has ten slots at 90% success (ten unavailable slots: past the 8-slot
budget of a whole month). A worker counts it and serves /metrics; a real
Prometheus scrapes it every second and evaluates deploy/prometheus/rules/,
and a real Alertmanager notifies a webhook in the test. Shown through
Prometheus's HTTP API:

* the month's availability series has exactly the value of the month ledger
  in Redis (and the budget series the ledger's budget);
* SlaBudgetExhausted and SlaMonthBreached fire for app 1 only, and reach
  Alertmanager's receiver;
* an exemption for the incident's window, produced afterwards, makes the
  month whole again: the series follow, and both alerts resolve (Alertmanager
  notifies ``resolved``).
"""

from __future__ import annotations

import json
import time

import pytest
from dashboard_queries import panel_queries
from prometheus_stack import PrometheusStack, Webhook
from stream_harness import OutRecord, batched_records, simulated_traffic, skip_near_a_month_boundary

from stream.sla.slots import SLOT_MS, day_start_ms, local_date, local_time, slot_start_ms

pytest_plugins = ["stream_harness"]

DOWN, CALM = "1400000001", "1400000002"
INCIDENT_SLOTS = 10


def sample(stack: PrometheusStack, promql: str) -> float | None:
    result = stack.query(promql)
    return float(result[0]["value"][1]) if result else None


MAIN_PANELS = {
    "Month availability (lines at 99.9%, 99.5%, 99%)",
    "Budget used of allowed",
    "Voucher if the month ended now",
    "Budget burn-down against the ideal",
    "Apps by budget left",
    "Firing alerts",
}
"""Panels that must show the incident's app (the open slot may be empty: all of the hour's slots can be closed)."""


def check_dashboard(stack: PrometheusStack) -> None:
    """Every query of the dashboard parses on the real Prometheus; the main panels show the incident's app."""
    queries = panel_queries()
    assert {q.panel for q in queries} >= MAIN_PANELS
    for q in queries:
        result = stack.query(q.expr)  # raises with Prometheus's error if it does not parse
        if q.panel in MAIN_PANELS:
            apps = {series["metric"].get("app") for series in result}
            assert DOWN in apps, f"{q.panel} ({q.ref}): {q.expr} returned {result}"


def test_prometheus_sees_the_ledger_and_alerts_fire_then_resolve(stream_deployment, tmp_path) -> None:
    d = stream_deployment(grace_seconds=0)
    tz = d.settings.policy.timezone
    skip_near_a_month_boundary(d.settings, ends_within_min=15)  # its waits add up to some 8 minutes
    now_ms = int(time.time() * 1000)
    month_start_ms = day_start_ms(local_date(now_ms, tz).replace(day=1), tz)
    start = max(slot_start_ms(now_ms - 65 * 60_000, tz), month_start_ms)
    if (now_ms - start) // SLOT_MS < INCIDENT_SLOTS + 1:
        pytest.skip("the service month began less than an hour ago: no room for the incident in it")
    minutes = (now_ms - start) // 60_000
    plan, events = simulated_traffic(
        (DOWN, CALM),
        start,
        minutes,
        incidents=[(0, INCIDENT_SLOTS * 5, 0.9, DOWN)],
        peak_per_minute=60,
        trough_share=1.0,
        seed=41,
        late_success_rate=0.0,
        duplicate_rate=0.0,
    )
    worker = d.start_worker()
    webhook = Webhook()
    stack = PrometheusStack(tmp_path / "prometheus", [f"127.0.0.1:{worker.metrics_port}"], webhook)
    try:
        d.produce(batched_records(events, batch=20))
        d.wait_applied()
        first_day = local_date(now_ms, tz).replace(day=1).isoformat()

        def ledger() -> dict:
            return d.month(DOWN, first_day) or {}

        d.wait_for("ten unavailable slots in the ledger", lambda: ledger().get("unavailable_slots") == 10, 120)
        month = ledger()
        assert (month["meets_sla"], month["error_budget"]["slots_allowed"]) == (False, 8)

        # The scraped series equal the ledger's figures exactly (floats of the same exact fraction).
        availability = f'sla_month_availability_ratio{{app="{DOWN}"}}'
        d.wait_for(
            "Prometheus to hold the ledger's availability",
            lambda: sample(stack, availability) == month["availability"],
            60,
            lambda: (sample(stack, availability), month["availability"], stack.logs()),
        )
        recorded = {
            f'app:sla_month_availability:ratio{{app="{DOWN}"}}': month["availability"],
            f'app:sla_month_budget_used:slots{{app="{DOWN}"}}': 10,
            f'app:sla_month_budget_allowed:slots{{app="{DOWN}"}}': 8,
            f'app:sla_month_voucher:ratio{{app="{DOWN}"}}': 0.1,
            f'app:sla_month_availability:ratio{{app="{CALM}"}}': 1.0,
        }
        d.wait_for(
            "the recording rules to hold the ledger's figures",
            lambda: all(sample(stack, q) == value for q, value in recorded.items()),
            30,
            lambda: {q: sample(stack, q) for q in recorded},
        )

        expected = {("SlaBudgetExhausted", DOWN), ("SlaMonthBreached", DOWN)}
        d.wait_for(
            "budget and breach alerts firing in Prometheus",
            lambda: expected <= set(stack.firing()),
            60,
            lambda: (sorted(stack.firing()), stack.logs()),
        )
        assert not {key for key in stack.firing() if key[1] == CALM}, "the calm app must not alert"
        assert float(stack.firing()[("SlaMonthBreached", DOWN)]["value"]) == 0.1
        check_dashboard(stack)

        def notified(status: str) -> set[tuple[str, str]]:
            return {(a["labels"]["alertname"], a["labels"].get("app", "")) for a in webhook.alerts(status)}

        d.wait_for("Alertmanager to notify both alerts", lambda: expected <= notified("firing"), 60, webhook.alerts)

        # An exemption over the incident's window: the slots are judged again, the month is whole.
        window = {
            "app_id": DOWN,
            "start": local_time(start, tz).isoformat(),
            "end": local_time(start + INCIDENT_SLOTS * SLOT_MS, tz).isoformat(),
            "clause": "announced-maintenance",
            "note": "announced a week ahead",
        }
        d.produce([OutRecord("exemptions", 0, b"maint", json.dumps(window).encode())])
        d.wait_for("the ledger to exempt the incident", lambda: ledger().get("exempt_slots") == 10, 60, ledger)
        assert ledger()["unavailable_slots"] == 0 and ledger()["meets_sla"] is True
        d.wait_for("Prometheus to see the month whole", lambda: sample(stack, availability) == 1.0, 60)
        d.wait_for(
            "both alerts resolved through Alertmanager",
            lambda: expected <= notified("resolved"),
            60,
            lambda: (sorted(stack.firing()), webhook.alerts("resolved")),
        )
        assert not expected & set(stack.firing())
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()
        webhook.close()
