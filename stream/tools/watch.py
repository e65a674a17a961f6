"""A live view of the stream in the terminal (`sla-stream watch`), read from Redis only.

For each app: the open slot's success rate so far, the last closed slots with
their verdicts, and the running service month (availability, budget left).
It reads the same state the closer writes, so what it shows is what the
reports will say. A Redis that does not answer, or refuses the password or
the TLS settings of the URL, ends it with one line naming the URL with its
password hidden.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import AuthenticationError, RedisError

from stream.config import Settings
from stream.formats import MonthSummary, month_summary
from stream.kafka_security import redact
from stream.live.store import Store, StoredVerdict, redis_client
from stream.sla.availability import display_percent
from stream.sla.months import service_month_on
from stream.sla.slots import SLOT_MS, local_date, local_time
from stream.sla.verdict import SlotCounts, judge_slot

RECENT_SLOTS = 6


class RedisUnavailable(Exception):
    """Redis did not answer, or refused the connection; the message names the URL without its password."""


def redis_failure(url: str, error: Exception) -> RedisUnavailable:
    """The one-line error for a Redis at ``url`` that failed with ``error``: where, why, what to check (no secret)."""
    if isinstance(error, AuthenticationError):
        what, advice = "refused sla-stream", "check the password in REDIS_URL or redis.url"
    elif isinstance(error, ValueError):
        what, advice = "is not a usable Redis URL", "see docs/security.md for the forms REDIS_URL takes"
    else:
        what, advice = "is not reachable", "start it (make up), or set REDIS_URL (rediss://...?ssl_ca_certs=CA for TLS)"
    return RedisUnavailable(redact(f"Redis at {url} {what} ({error}); {advice}"))


@dataclass(frozen=True)
class AppView:
    """What the live view shows of one app."""

    app_id: str
    open_slot_ms: int | None
    open_counts: SlotCounts | None
    recent: Sequence[tuple[int, StoredVerdict | None]]
    """The slots before the open one, oldest first, with their verdicts (None: no traffic, or not closed yet)."""
    last_closed_ms: int | None
    """Slots after this one are still waiting for stream time to pass their end plus the grace period."""
    month: MonthSummary | None
    """The running service month, from its month ledger."""


async def snapshot(store: Store, settings: Settings) -> list[AppView]:
    """Read every app's view from Redis."""
    open_by_app = await store.newest_open_slots()
    views = []
    for app_id in sorted(await store.apps()):
        newest_closed = await store.last_closed_slot(app_id)
        current = open_by_app.get(app_id)
        anchor = current if current is not None else (newest_closed + SLOT_MS if newest_closed is not None else None)
        recent_slots = [anchor - i * SLOT_MS for i in range(RECENT_SLOTS, 0, -1)] if anchor is not None else []
        verdicts = await store.verdicts([(app_id, s) for s in recent_slots])
        open_counts = (await store.slot_counts([(app_id, current)]))[0] if current is not None else None
        month = None
        if anchor is not None:
            day = local_date(anchor - 1, settings.policy.timezone)
            covering = service_month_on(day, settings.terms(app_id).subscriptions)
            figures = await store.month(app_id, covering.first_day) if covering else None
            month = None if figures is None else month_summary(figures)
        recent = list(zip(recent_slots, verdicts, strict=True))
        views.append(AppView(app_id, current, open_counts, recent, newest_closed, month))
    return views


def _verdict_cell(verdict: StoredVerdict | None, closed: bool) -> str:
    """``ok 100%``, ``BAD 95%``, ``EXM 40%`` (unavailable but exempt), ``·`` (no traffic) or ``…`` (not closed yet)."""
    if verdict is None:
        return "·" if closed else "…"
    rate = judge_slot(verdict.counts).success_rate
    label = "EXM" if verdict.exempt else "BAD" if verdict.unavailable else "ok"
    return label if rate is None else f"{label} {display_percent(rate, 0)}"


def render(views: Sequence[AppView], settings: Settings, now: float) -> str:
    """The screen for one refresh, as text."""
    tz = settings.policy.timezone
    clock = local_time(int(now * 1000), tz).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"sla-stream live  {clock} {tz.key}, the SLA's time zone, as every time below   (Ctrl-C to stop)", ""]
    lines.append(
        f"{'app':<12} {'open slot':<12} {'rate so far':>11}   "
        f"{'last closed slots (oldest → newest)':<54} {'month to date':>13} {'budget left':>12}"
    )
    for view in views:
        if view.open_slot_ms is not None and view.open_counts is not None:
            rate = judge_slot(view.open_counts).success_rate
            open_text = local_time(view.open_slot_ms, tz).strftime("%m-%d %H:%M")
            rate_text = "-" if rate is None else display_percent(rate)
        else:
            open_text, rate_text = "-", "-"
        last_closed = view.last_closed_ms if view.last_closed_ms is not None else -1
        cells = " ".join(f"{_verdict_cell(v, slot_ms <= last_closed):<8}" for slot_ms, v in view.recent)
        month = view.month
        if month:
            month_text = month.availability_display + ("" if month.meets_sla else " !")
            budget_text = f"{month.slots_left}/{month.slots_allowed} slots"
        else:
            month_text, budget_text = "-", "-"
        lines.append(
            f"{view.app_id:<12} {open_text:<12} {rate_text:>11}   {cells:<54} {month_text:>13} {budget_text:>12}"
        )
    if not views:
        lines.append("(no traffic yet)")
    lines += [
        "",
        "BAD: unavailable slot (< 99%), EXM: unavailable but exempt, ·: no traffic, …: waiting for its grace period;",
        "'!': month below target. Rates are truncated, never rounded up.",
    ]
    return "\n".join(lines)


async def watch(settings: Settings, interval_s: float = 1.0, once: bool = False) -> None:
    """Redraw the view every ``interval_s`` until interrupted (or once); :class:`RedisUnavailable` if Redis fails."""
    try:
        redis = redis_client(settings.redis_url, socket_timeout_s=5.0, cluster=settings.redis_cluster)
    except ValueError as error:
        raise redis_failure(settings.redis_url, error) from None
    store = Store.of(redis, settings)
    try:
        while True:
            try:
                views = await snapshot(store, settings)
            except RedisError as error:
                raise redis_failure(settings.redis_url, error) from None
            screen = render(views, settings, time.time())
            print(screen if once else "\x1b[H\x1b[2J" + screen, flush=True)
            if once:
                return
            await asyncio.sleep(interval_s)
    finally:
        await redis.aclose()
