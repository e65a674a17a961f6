"""Each app's running service months, derived from the live state in Redis.

The month ledger is never counted on its own: it is recomputed from the
verdicts (the app's unavailable and data-quality slots), the daily totals
and the exemptions by :func:`stream.sla.assessment.assess_month`, the same
function the offline report uses, so the two cannot disagree.

A month's **statement** (every slot with traffic, its verdict and the
digest, :mod:`stream.statements`) reads every slot of the month instead:
:func:`statements_from_store` serves the live pages and the replay, and builds
it with the offline report's own :func:`stream.statements.statement.build_statement`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import timedelta

from stream.config import Settings
from stream.live.store import MonthSpan, Store
from stream.sla.assessment import MonthAssessment, assess_month
from stream.sla.coverage import MinuteMap, month_label
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, calendar_month, service_months_in
from stream.statements.statement import Source, Statement, build_statement


async def assess_live_months(
    store: Store, settings: Settings, months: Sequence[tuple[str, int, int]], exemptions: tuple[Exemption, ...]
) -> list[list[MonthAssessment]]:
    """For each ``(app, year, month)``, the app's service months in that calendar month, from what Redis holds now.

    One read a shard and chunk of months for all of them
    (:meth:`stream.live.store.Store.month_inputs`): a slot boundary closes a
    slot of every app, and the closer recomputes every one of their ledgers.
    """
    tz = settings.policy.timezone
    wanted = [
        (i, app_id, service_month)
        for i, (app_id, year, month) in enumerate(months)
        for service_month in service_months_in(year, month, settings.terms(app_id).subscriptions)
    ]
    spans = [
        MonthSpan(app_id, *service_month.span_ms(tz), *_days(service_month)) for _, app_id, service_month in wanted
    ]
    assessments: list[list[MonthAssessment]] = [[] for _ in months]
    for (i, app_id, service_month), read in zip(wanted, await store.month_inputs(spans), strict=True):
        terms = settings.terms(app_id)
        assessments[i].append(
            assess_month(
                app_id,
                service_month,
                read.flagged,
                exemptions,
                settings.calendar,
                terms.fees.get(service_month.first_day),
                settings.policy,
                totals=read.totals,
            )
        )
    return assessments


@functools.cache
def _days(service_month: ServiceMonth) -> tuple[str, tuple[str, ...]]:
    """The service month's calendar month and local days, as the daily totals' key and fields name them
    (``YYYY-MM``, ``DD``; no days for a whole calendar month, whose total the key holds; the same for every app)."""
    first = service_month.first_day
    if service_month == calendar_month(first.year, first.month):
        return f"{first:%Y-%m}", ()
    return f"{first:%Y-%m}", tuple(f"{first + timedelta(days=d):%d}" for d in range(service_month.days))


async def statements_from_store(
    store: Store,
    settings: Settings,
    app_id: str,
    service_months: list[ServiceMonth],
    exemptions: tuple[Exemption, ...],
    source: Source,
    as_of_ms: int,
    covered: dict[str, MinuteMap] | None = None,
) -> list[Statement]:
    """The statements of the app's ``service_months`` from every slot Redis holds for them, as of ``as_of_ms``.

    A ``live`` statement covers the slots closed so far, each with its verdict's
    revision, as the month ledger and ``/metrics`` do; the slots still open
    are its :attr:`~stream.statements.statement.Statement.open_slots`. A
    replay closes every slot before it reads them (its revisions are its own
    closing's, so it lists none). Each says what the input covers of its
    month: the minutes Redis recorded an event of any app in, up to
    ``as_of_ms`` (the live watermark; a replay's clock). ``covered`` keeps
    the maps read, by ``YYYY-MM``, for the next app's call (a replay reads
    them once, not once an app).
    """
    tz = settings.policy.timezone
    statements = []
    covered = {} if covered is None else covered
    for service_month in service_months:
        day = service_month.first_day
        label = month_label(day.year, day.month)
        if label not in covered:
            covered[label] = await store.coverage(label, *calendar_month(day.year, day.month).span_ms(tz))
        listing = await store.slot_listing(app_id, label, service_month.span_ms(tz))
        closed = {slot_ms: (counts, r) for slot_ms, (counts, r) in listing.items() if r is not None or source != "live"}
        statements.append(
            build_statement(
                app_id,
                service_month,
                {slot_ms: counts for slot_ms, (counts, _) in closed.items()},
                exemptions,
                settings.calendar,
                settings.terms(app_id).fees.get(service_month.first_day),
                settings.policy,
                source,
                covered=covered[label],
                as_of_ms=as_of_ms,
                revisions={slot_ms: r for slot_ms, (_, r) in closed.items() if r is not None and source == "live"},
                open_counts={slot_ms: counts for slot_ms, (counts, _) in listing.items() if slot_ms not in closed},
            )
        )
    return statements
