"""Each app's running service months, derived from the live state in Redis.

The month ledger is never counted on its own: it is recomputed from the
verdicts (the app's unavailable and data-quality slots), the daily totals
and the exemptions by :func:`stream.sla.assessment.assess_month`, the same
function the offline report uses, so the two cannot disagree.
"""

from __future__ import annotations

from datetime import timedelta

from stream.config import Settings
from stream.live.store import Store
from stream.sla.assessment import MonthAssessment, assess_month
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, service_months_in


async def assess_live_month(
    store: Store, settings: Settings, app_id: str, year: int, month: int, exemptions: tuple[Exemption, ...]
) -> list[MonthAssessment]:
    """The app's service months in ``year-month``, from what Redis holds now."""
    subscriptions = settings.terms(app_id).subscriptions
    return [
        await assess_service_month(store, settings, app_id, service_month, exemptions)
        for service_month in service_months_in(year, month, subscriptions)
    ]


async def assess_service_month(
    store: Store, settings: Settings, app_id: str, service_month: ServiceMonth, exemptions: tuple[Exemption, ...]
) -> MonthAssessment:
    """One service month of the app, from what Redis holds now."""
    start_ms, end_ms = service_month.span_ms(settings.policy.timezone)
    days = [(service_month.first_day + timedelta(days=i)).isoformat() for i in range(service_month.days)]
    return assess_month(
        app_id,
        service_month,
        await store.flagged_slots(app_id, start_ms, end_ms),
        exemptions,
        settings.calendar,
        settings.terms(app_id).fees.get(service_month.first_day),
        settings.policy,
        totals=await store.day_totals(app_id, days),
    )
