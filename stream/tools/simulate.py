"""Realistic room-entry traffic for demos and tests, written as JSON Lines event files.

Each app's request rate follows a daily curve (quiet at 04:00, busiest at
16:00 on the SLA's clock) with Poisson noise; requests succeed with a base
failure rate, or at an incident's success rate while one is on. Some records
are delivered twice, some successes arrive minutes late, and a few lack
``request_ts``, so a consumer meets what real producers send. The output is
in arrival order; the same seed gives the same file.

Example:
    >>> from zoneinfo import ZoneInfo
    >>> plan = TrafficPlan(app_ids=("1400000001",), start_ms=1552183200000, end_ms=1552183500000,
    ...                    peak_per_minute=60, seed=1, tz=ZoneInfo("Asia/Shanghai"))
    >>> events = list(generate(plan))
    >>> {event.kind for event in events} == {"request", "success"}
    True
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from stream.arguments import calendar_month_argument
from stream.events import Event, RequestEvent, SuccessEvent, to_line
from stream.sla.months import calendar_month
from stream.sla.slots import SLOT_MS, instant_ms, local_time, slots_between

_MINUTE_MS = 60_000
MAX_PEAK_PER_MINUTE = 1_000_000
"""A bound on simulated load: well past any single app, and keeps the Poisson draws finite."""
_DURATION_UNITS_MS = {"s": 1000, "m": _MINUTE_MS, "h": 60 * _MINUTE_MS, "d": 24 * 60 * _MINUTE_MS}


class PlanError(ValueError):
    """A simulation request that cannot be carried out; the message names the argument."""


@dataclass(frozen=True)
class Incident:
    """During ``[start_ms, end_ms)`` requests of ``app_id`` (``None``: all apps) succeed at ``success_rate``."""

    start_ms: int
    end_ms: int
    success_rate: float
    app_id: str | None = None

    def covers(self, app_id: str, ts: int) -> bool:
        return self.start_ms <= ts < self.end_ms and self.app_id in (None, app_id)


@dataclass(frozen=True)
class TrafficPlan:
    """What to simulate. App ``i`` (from 0) peaks at ``peak_per_minute / (i + 1)`` requests a minute."""

    app_ids: tuple[str, ...]
    start_ms: int
    end_ms: int
    peak_per_minute: float
    seed: int
    tz: ZoneInfo
    trough_share: float = 0.15
    base_failure_rate: float = 0.00001
    duplicate_rate: float = 0.002
    late_success_rate: float = 0.003
    missing_request_ts_rate: float = 0.0002
    incidents: tuple[Incident, ...] = ()


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's method for small means, the normal approximation above."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _requests_per_minute(plan: TrafficPlan, app_index: int, slot_ms: int) -> float:
    moment = local_time(slot_ms + SLOT_MS // 2, plan.tz)
    hour = moment.hour + moment.minute / 60
    shape = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 4) / 24)
    return plan.peak_per_minute / (app_index + 1) * (plan.trough_share + (1 - plan.trough_share) * shape)


def _slot_events(plan: TrafficPlan, rng: random.Random, app_index: int, slot_ms: int) -> Iterator[tuple[int, Event]]:
    """The events one app's slot produces, each with its arrival time."""
    app_id = plan.app_ids[app_index]
    for _ in range(_poisson(rng, _requests_per_minute(plan, app_index, slot_ms) * SLOT_MS / _MINUTE_MS)):
        ts = slot_ms + rng.randrange(SLOT_MS)
        if not plan.start_ms <= ts < plan.end_ms:  # a period that starts or ends inside a slot
            continue
        serial = f"{app_id}-{ts}-{rng.getrandbits(32):08x}"
        room, user = str(rng.randrange(1, 5000)), f"u{rng.randrange(1, 100000)}"
        yield ts, RequestEvent(f"r-{serial}", app_id, room, user, ts)
        incident = next((i for i in plan.incidents if i.covers(app_id, ts)), None)
        failure_rate = 1 - incident.success_rate if incident else plan.base_failure_rate
        if rng.random() < failure_rate:
            continue
        latency = 150 + int(rng.expovariate(1 / 400))
        if rng.random() < plan.late_success_rate:
            latency += rng.randrange(2 * _MINUTE_MS, 15 * _MINUTE_MS)
        request_ts = None if rng.random() < plan.missing_request_ts_rate else ts
        yield ts + latency, SuccessEvent(f"s-{serial}", f"r-{serial}", app_id, room, user, ts + latency, request_ts)


def generate(plan: TrafficPlan) -> Iterator[Event]:
    """Every event of the plan in arrival order, duplicates included."""
    return (event for _, event in generate_timed(plan))


def generate_timed(plan: TrafficPlan) -> Iterator[tuple[int, Event]]:
    """Every event of the plan with its arrival time (epoch ms, never before its ``ts``), in arrival order.

    Requests fall in ``[start_ms, end_ms)``; their successes and second
    deliveries arrive up to some 15 minutes later. Events wait in a heap until
    the slot being generated has passed their arrival time, so memory holds
    only what is in flight (late successes), not the whole period.
    """
    rng = random.Random(plan.seed)
    pending: list[tuple[int, int, Event]] = []
    sequence = 0
    for slot_ms in slots_between(plan.start_ms, plan.end_ms, plan.tz):
        for app_index in range(len(plan.app_ids)):
            for arrival, event in _slot_events(plan, rng, app_index, slot_ms):
                copies = 2 if rng.random() < plan.duplicate_rate else 1
                for copy in range(copies):
                    heapq.heappush(pending, (arrival + copy * rng.randrange(1, 5000), sequence, event))
                    sequence += 1
        while pending and pending[0][0] < slot_ms + SLOT_MS:
            arrival, _, event = heapq.heappop(pending)
            yield arrival, event
    while pending:
        arrival, _, event = heapq.heappop(pending)
        yield arrival, event


def write_file(plan: TrafficPlan, out: Path) -> str:
    """Write the plan's events as JSON Lines to ``out`` (``-``: standard output); say what was written."""
    written: Counter[str] = Counter()
    handle = sys.stdout if str(out) == "-" else out.open("w", encoding="utf-8")
    try:
        for event in generate(plan):
            handle.write(to_line(event) + "\n")
            written[event.kind] += 1
    finally:
        if handle is not sys.stdout:
            handle.close()
    return f"{written['request']:,} request and {written['success']:,} success records for {len(plan.app_ids)} apps"


def _plan_time(text: str, tz: ZoneInfo, what: str) -> int:
    try:
        return instant_ms(text, tz)
    except ValueError:
        raise PlanError(f"{what}: {text!r} is not an ISO date or time") from None


def duration_ms(text: str, what: str = "incident duration", zero: bool = False) -> int:
    """``90s``, ``30m``, ``2h`` or ``1d`` in milliseconds; ``0s`` only when ``zero`` is allowed."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match or (int(match[1]) == 0 and not zero):
        raise PlanError(f"{what} must look like 90s, 30m, 2h or 1d, got {text!r}")
    return int(match[1]) * _DURATION_UNITS_MS[match[2]]


def _rate(value: float, what: str) -> float:
    if not 0 <= value <= 1:
        raise PlanError(f"{what} must be between 0 and 1, got {value}")
    return value


def parse_incident(text: str, tz: ZoneInfo, period_start_ms: int | None = None) -> Incident:
    """``START,DURATION[,SUCCESS_RATE[,APP_ID]]``, e.g. ``2026-10-14T10:00+08:00,30m,0.95``.

    ``START`` may also be ``+OFFSET`` (``+10m``): that long after ``period_start_ms``.
    """
    parts = [part.strip() for part in text.split(",")]
    if not 2 <= len(parts) <= 4:
        raise PlanError(f"incident must be START,DURATION[,SUCCESS_RATE[,APP_ID]], got {text!r}")
    if parts[0].startswith("+") and period_start_ms is not None:
        start = period_start_ms + duration_ms(parts[0][1:], "incident offset (+OFFSET)", zero=True)
    else:
        start = _plan_time(parts[0], tz, "incident start")
    try:
        rate = float(parts[2]) if len(parts) > 2 else 0.9
    except ValueError:
        raise PlanError(f"incident success rate must be a number, got {parts[2]!r}") from None
    return Incident(
        start,
        start + duration_ms(parts[1]),
        _rate(rate, "incident success rate"),
        parts[3] if len(parts) > 3 else None,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apps", type=int, default=3, help="number of apps, ids 1400000001 upwards (default 3)")
    parser.add_argument(
        "--month", type=calendar_month_argument, metavar="YYYY-MM", help="simulate this whole calendar month"
    )
    parser.add_argument("--start", help="first instant (ISO; without offset: the SLA's zone), instead of --month")
    parser.add_argument("--end", help="end instant, exclusive, with --start")
    parser.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="START,DURATION[,RATE[,APP]]",
        help="an outage, e.g. 2026-10-14T10:00+08:00,30m,0.95, or +10m,5m,0.5 (10 minutes after the start); repeatable",
    )
    parser.add_argument(
        "--peak-per-minute",
        type=float,
        default=12.0,
        help="requests a minute at the daily peak of the first app (default 12)",
    )
    parser.add_argument(
        "--base-failure-rate",
        type=float,
        default=0.00001,
        help="share of requests without a success outside incidents (default 0.00001)",
    )
    parser.add_argument(
        "--duplicate-rate", type=float, default=0.002, help="share of events delivered twice (default 0.002)"
    )
    parser.add_argument("--late-rate", type=float, default=0.003, help="share of successes reported minutes late")
    parser.add_argument("--seed", type=int, default=1, help="the same seed gives the same events (default 1)")
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--out", type=Path, help="JSON Lines file to write, or - for stdout")
    output.add_argument("--kafka", action="store_true", help="send to the input topics instead (see --speed, --batch)")


def plan_from_args(args: argparse.Namespace, tz: ZoneInfo, period: tuple[int, int] | None = None) -> TrafficPlan:
    """The plan the arguments ask for; ``period`` (start, end) stands for --month or --start/--end when given."""
    if args.apps < 1:
        raise PlanError(f"--apps must be at least 1, got {args.apps}")
    if args.month and (args.start or args.end):
        raise PlanError("give either --month or --start/--end, not both")
    if period:
        start, end = period
    elif args.month:
        start, end = calendar_month(*args.month).span_ms(tz)
    elif args.start and args.end:
        start, end = _plan_time(args.start, tz, "--start"), _plan_time(args.end, tz, "--end")
    else:
        raise PlanError("give --month YYYY-MM, or --start and --end")
    if end <= start:
        raise PlanError("--end must be after --start")
    if not 0 < args.peak_per_minute <= MAX_PEAK_PER_MINUTE:
        raise PlanError(
            f"--peak-per-minute must be above 0 and at most {MAX_PEAK_PER_MINUTE:,}, got {args.peak_per_minute}"
        )
    return TrafficPlan(
        app_ids=tuple(str(1400000001 + i) for i in range(args.apps)),
        start_ms=start,
        end_ms=end,
        peak_per_minute=args.peak_per_minute,
        seed=args.seed,
        tz=tz,
        base_failure_rate=_rate(args.base_failure_rate, "--base-failure-rate"),
        duplicate_rate=_rate(args.duplicate_rate, "--duplicate-rate"),
        late_success_rate=_rate(args.late_rate, "--late-rate"),
        incidents=tuple(parse_incident(text, tz, start) for text in args.incident),
    )
