"""What a worker tells Prometheus: each app's running month and budget, and the pipeline's health (docs/metrics.md).

Two kinds of series, read two ways:

* **App series** (``sla_month_*``, ``sla_open_slot_*``, ``sla_slots_closed_total``,
  ``sla_calls_*``, ``sla_watermark_*``, ``sla_input_*``) come from Redis (the month gauges
  from the closer's month ledgers, :class:`RunningMonths`), and only the
  consumer group's leader exports them, so Prometheus holds them once for
  the fleet whatever the number of workers. Every worker reads the whole
  job's state, not its own partitions, so whichever is leader exports the
  same values: rules and dashboards take ``max by (app)``, and when the
  leader changes (it dies, the group rebalances) the series go on from the
  new one under its ``instance``, nothing counted twice. Their counters live
  in Redis (they survive a worker's restart, and start again only with a
  rebuild).
* **Worker series** (``sla_records_total``, ``sla_dead_letters_total``,
  ``sla_consumer_lag_records``, ``sla_closer_tick_seconds``,
  ``sla_worker_state``...) are this process's own: sum them over workers.

A scrape never waits on Redis: :class:`SnapshotReader` reads Redis on the
worker's timer, and :class:`SlaCollector`
turns the last snapshot and the in-process counters into metric families
when Prometheus asks. ``sla_snapshot_timestamp_seconds`` says how fresh the
app series are (a Redis outage freezes them, visibly).

Label values stay bounded: ``app``, ``topic``, ``partition``, ``reason`` (one of
:data:`stream.events.REASON_CATEGORIES`), ``outcome``, ``state``; never a
room, user, slot or month.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from stream.config import Settings
from stream.events import REASON_CATEGORIES
from stream.formats import MonthSummary, month_summary, month_to_json
from stream.live.app_series import AppSeries
from stream.live.clock import ClockTiming
from stream.live.closer import TickResult
from stream.live.exemptions import current_exemptions
from stream.live.health import STATES, Health
from stream.live.ingest import IngestStats
from stream.live.store import AppCounters, Store
from stream.sla.assessment import assess_month
from stream.sla.coverage import Coverage, month_label
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, calendar_month, service_month_on
from stream.sla.slots import local_date
from stream.sla.verdict import SlotCounts

REFRESH_INTERVAL_S = 5.0
"""How often a worker reads the app series from Redis: well inside a 15 s scrape interval."""

STALE_AFTER_S = 60.0
"""A worker whose last snapshot is older than this stops exporting app series, so ``max by (app)`` over the
workers takes only fresh figures (an exemption's effect is not held back by a worker cut off from Redis).
``sla_snapshot_timestamp_seconds`` is always exported, to say how old the figures are."""

HELD_WHILE_CLOSING_S = 30.0
"""How old a snapshot may grow while a closer is mid-tick (whichever worker's: it holds the lease) before it is
read again anyway.

Why wait at all: a tick that lasts (a slot boundary of a fleet, a catch-up) changes
every app's figures as it goes, so a snapshot read halfway is thrown away at the
next refresh, and reading 10,000 apps' figures took a fifth of the leader's CPU
and much of Redis's while closing (and, from a second worker, slowed the leader's
closer by a tenth). Half of :data:`STALE_AFTER_S`, so the app series never drop
out meanwhile; ``sla_snapshot_timestamp_seconds`` says their age."""

DEFAULT_ADDRESS = "127.0.0.1:9464"


def refresh_due(snapshot: Snapshot | None, now_ms: int, closing: bool) -> bool:
    """Whether to read the app series again now: always, unless a closer is mid-tick and the last snapshot is
    younger than :data:`HELD_WHILE_CLOSING_S`.

    Example:
        >>> taken = Snapshot(taken_ms=100_000, apps={}, watermark_ms=None)
        >>> refresh_due(taken, 110_000, closing=True), refresh_due(taken, 130_000, closing=True)
        (False, True)
        >>> refresh_due(taken, 110_000, closing=False), refresh_due(None, 110_000, closing=True)
        (True, True)
    """
    return not closing or snapshot is None or now_ms - snapshot.taken_ms >= HELD_WHILE_CLOSING_S * 1000


def metrics_address(text: str) -> tuple[str, int] | None:
    """``[HOST:]PORT`` as ``(host, port)``; ``0`` or ``off`` turns the endpoint off (None).

    Example:
        >>> metrics_address("9465"), metrics_address("0.0.0.0:9464"), metrics_address("off")
        (('127.0.0.1', 9465), ('0.0.0.0', 9464), None)
    """
    if text.strip().lower() in ("0", "off"):
        return None
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not [HOST:]PORT (a port from 1 to 65535), or 0 / off")
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class OpenSlot:
    """An app's newest open slot: its start and what it has counted so far."""

    start_ms: int
    counts: SlotCounts


@dataclass(frozen=True)
class AppSnapshot:
    """One app's figures at a refresh."""

    month: MonthSummary | None
    """The service month running now, as its month ledger says (None: no subscription covers today)."""
    open_slot: OpenSlot | None
    counters: AppCounters


@dataclass(frozen=True)
class Snapshot:
    """The app series as read from Redis at ``taken_ms``."""

    taken_ms: int
    apps: Mapping[str, AppSnapshot]
    watermark_ms: int | None
    coverage: Coverage | None = None
    """What the input (every app) covers of the running calendar month, as of the watermark; None while the
    watermark is unknown (no silence is claimed then)."""


class RunningMonths:
    """Every app's running month as the closer's month ledgers say, read again only where a ledger changed.

    The closer recomputes an app's ledger whenever one of its verdicts changes
    (a slot closed, a late event, an exemption) and stamps it with the next
    ledger version (:meth:`Store.save_months`); this keeps what it read and, at
    each refresh, reads only the ledgers saved since: a quiet fleet of 10,000
    apps costs one round trip, not an assessment an app. An app whose running
    month has no ledger yet (nothing of it closed) has the figures of a month
    without unavailable slots, worked out here without Redis. A rebuilt
    namespace (another generation) or a ledger version gone back (Redis lost
    writes) drops everything kept.
    """

    def __init__(self) -> None:
        self._generation: int | None = None
        self._versions: tuple[int, ...] = ()
        """Each shard's ledger version when last read (empty: never read)."""
        self._kept: dict[tuple[str, date], MonthSummary] = {}
        self._last: dict[str, MonthSummary] = {}
        self._read_for: tuple[object, ...] = ()
        self._asked: Mapping[str, ServiceMonth] | None = None
        """What ``_last`` was read for: the generation and ledger versions, and the months asked (that mapping)."""

    async def read(
        self, store: Store, settings: Settings, running: Mapping[str, ServiceMonth], exemptions: tuple[Exemption, ...]
    ) -> dict[str, MonthSummary]:
        """The summary of each app's running service month in ``running``."""
        meta = await store.meta()
        generation = None if meta is None else meta.generation
        versions, changed = await store.months_changed(self._versions)
        if generation != self._generation or any(
            now < then for now, then in zip(versions, self._versions, strict=False)
        ):
            self._kept.clear()
        else:
            for key in changed:
                self._kept.pop(key, None)
        if (generation, versions) == self._read_for and running is self._asked and not changed:
            return self._last  # nothing saved since, for the same months: the same summaries
        self._generation, self._versions = generation, versions
        wanted = {(app_id, month.first_day): month for app_id, month in running.items()}
        missing = [key for key in wanted if key not in self._kept]
        kept = {key: self._kept[key] for key in wanted if key in self._kept}  # only running months: bounded
        for key, figures in zip(missing, await store.months(missing), strict=True):
            kept[key] = month_summary(
                figures if figures is not None else _unjudged_month(settings, key[0], wanted[key], exemptions)
            )
        self._kept = kept
        self._last = {app_id: kept[(app_id, month.first_day)] for app_id, month in running.items()}
        self._read_for, self._asked = (generation, versions), running
        return self._last


def _unjudged_month(
    settings: Settings, app_id: str, month: ServiceMonth, exemptions: tuple[Exemption, ...]
) -> dict[str, Any]:
    """The ledger a month without any judged slot would have: the same function as the closer's, on no slot."""
    terms = settings.terms(app_id)
    assessment = assess_month(
        app_id, month, {}, exemptions, settings.calendar, terms.fees.get(month.first_day), settings.policy
    )
    return month_to_json(assessment, settings.policy.timezone)


class SnapshotReader:
    """Reads a worker's snapshot of the app series, each part again only where it changed since the last read.

    * Each shard's apps, newest open slots and counters only when the shard
      changed since (its ``(generation, changes)``, :meth:`Store.changes`: every
      step that counted an event or stored a verdict there bumps it);
    * the running months through :class:`RunningMonths` (the ledgers saved since);
    * which service month each app is in, once a day (and for a new app).

    A quiet fleet's refresh is then a few round trips and no work an app:
    the previous snapshot's figures are kept as they are (the same objects, so
    :class:`stream.live.app_series.AppSeries` renders nothing again either).
    """

    def __init__(self) -> None:
        self._months = RunningMonths()
        self._shards: dict[int, tuple[tuple[int, int], dict[str, tuple[OpenSlot | None, AppCounters]]]] = {}
        self._covering: tuple[date, dict[str, ServiceMonth | None], dict[str, ServiceMonth]] = (date.min, {}, {})
        self._apps: Mapping[str, AppSnapshot] = {}
        self._made_of: tuple[tuple[tuple[int, int], ...], object, object] | None = None
        """What ``_apps`` was made of: the shards' steps, the covering months and the running months read."""

    async def read(self, store: Store, settings: Settings, input_tps: Sequence[str], now_ms: int) -> Snapshot:
        """Every app's running month (its month ledger), open slot and counters, as of ``now_ms``.

        The running month is the one of the newest slot that can have closed by
        stream time (the watermark less the grace period and a slot), so a month's
        last slots, judged minutes after midnight, still count in the month they
        belong to, and a backlog replayed from last month shows last month.
        """
        tz = settings.policy.timezone
        timing = ClockTiming.of(settings)
        watermark = timing.watermark(await store.partition_states(input_tps), now_ms)
        today = local_date(now_ms if watermark is None else timing.due_before(watermark) - 1, tz)
        await self._read_shards(store)
        apps = {app_id: app for shard in self._shards.values() for app_id, app in shard[1].items()}
        covering, asked = self._covering_on(today, apps, settings)
        exemptions = await current_exemptions(store, settings)
        running = await self._months.read(store, settings, asked, exemptions)
        steps = tuple(step for step, _ in self._shards.values())
        made_of = self._made_of
        if made_of is None or made_of[0] != steps or made_of[1] is not covering or made_of[2] is not running:
            self._apps = {app_id: AppSnapshot(running.get(app_id), *apps[app_id]) for app_id in sorted(apps)}
            self._made_of = (steps, covering, running)
        coverage = None if watermark is None else await _running_coverage(store, settings, today, watermark)
        return Snapshot(now_ms, self._apps, watermark, coverage)

    async def _read_shards(self, store: Store) -> None:
        """Read again each shard that changed since it was last read."""
        steps = await store.changes()
        changed = [i for i, step in enumerate(steps) if self._shards.get(i, (None,))[0] != step]
        if not changed:
            return
        apps = sorted(await store.apps(changed))
        newest_open = await store.newest_open_slots(changed)
        open_counts = dict(zip(newest_open, await store.slot_counts(list(newest_open.items())), strict=True))
        counters = await store.app_counters(apps)
        by_shard: dict[int, dict[str, tuple[OpenSlot | None, AppCounters]]] = {i: {} for i in changed}
        for app_id in apps:
            slot_ms = newest_open.get(app_id)
            open_slot = None if slot_ms is None else OpenSlot(slot_ms, open_counts[app_id])
            by_shard[store.shard_of(app_id).index][app_id] = (open_slot, counters[app_id])
        for i in changed:
            self._shards[i] = (steps[i], by_shard[i])

    def _covering_on(
        self, today: date, apps: Mapping[str, object], settings: Settings
    ) -> tuple[dict[str, ServiceMonth | None], dict[str, ServiceMonth]]:
        """The service month ``today`` falls in for each app (and those of the apps that have one): kept for the
        day, worked out again only on another day or for a new app."""
        day, covering, asked = self._covering
        if day != today or any(app_id not in covering for app_id in apps):
            plain = service_month_on(today, ())  # the calendar month: every app without subscriptions
            covering = {
                app_id: service_month_on(today, settings.apps[app_id].subscriptions)
                if app_id in settings.apps
                else plain
                for app_id in apps
            }
            asked = {app_id: month for app_id, month in covering.items() if month is not None}
            self._covering = (today, covering, asked)
        return covering, asked


async def _running_coverage(store: Store, settings: Settings, today: date, watermark_ms: int) -> Coverage:
    """The input's coverage of ``today``'s calendar month up to the watermark (one bitmap a partition)."""
    span = calendar_month(today.year, today.month).span_ms(settings.policy.timezone)
    covered = await store.coverage(month_label(today.year, today.month), *span)
    return Coverage.measure(covered, *span, watermark_ms, settings.policy.silent_after_minutes)


@dataclass
class PipelineCounts:
    """This worker's own pipeline figures, kept in process, read at each scrape."""

    ingest: Mapping[str, IngestStats]
    """Per input topic (the ingester's ``by_topic``)."""
    verdicts_first: int = 0
    """Slots this worker's closer closed (revision 1)."""
    verdicts_revised: int = 0
    """Later revisions this worker's closer published."""
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    """Records between this worker's position and the last stable offset, per assigned input partition."""


class SlaCollector(Collector):
    """Builds every ``sla_*`` family from the last snapshot and the in-process counts, at scrape time."""

    def __init__(
        self,
        settings: Settings,
        health: Health,
        pipeline: PipelineCounts,
        wall_clock: Callable[[], float] = time.time,
        exports_apps: Callable[[], bool] = lambda: True,
    ) -> None:
        self.snapshot: Snapshot | None = None
        self._settings = settings
        self._health = health
        self._pipeline = pipeline
        self._wall_clock = wall_clock
        self._exports_apps = exports_apps
        """Whether this worker exports the app series now: the group's leader alone, so Prometheus holds them
        once for the fleet, not once a worker."""
        self._version = version("sla-stream")
        self._app_series = AppSeries(settings.policy.timezone)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        yield from self._info()
        yield from self._worker()
        snapshot = self.snapshot
        yield GaugeMetricFamily(
            "sla_snapshot_timestamp_seconds",
            "When the app series were last read from Redis (0: not yet)",
            0.0 if snapshot is None else snapshot.taken_ms / 1000,
        )
        if self._exporting(snapshot):
            yield from self._job(snapshot)  # type: ignore[arg-type]

    def _exporting(self, snapshot: Snapshot | None) -> bool:
        """Whether the app series go out now: a fresh snapshot, on the worker that exports them."""
        fresh = snapshot is not None and self._wall_clock() - snapshot.taken_ms / 1000 <= STALE_AFTER_S
        return fresh and self._exports_apps()

    def app_text(self) -> str:
        """The per-app families as exposition text (:mod:`stream.live.app_series`; empty when not exported)."""
        snapshot = self.snapshot
        return self._app_series.text(snapshot.apps) if snapshot is not None and self._exporting(snapshot) else ""

    def _info(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        policy = self._settings.policy
        yield InfoMetricFamily(
            "sla",
            "sla-stream's version and the settings its figures rest on",
            value={
                "version": self._version,
                "timezone": policy.timezone.key,
                "slot_success_min": str(policy.slot_success_min),
                "availability_target": str(policy.availability_target),
                "group": self._settings.group,
            },
        )
        yield GaugeMetricFamily(
            "sla_availability_target_ratio",
            "The month's availability target (0.999)",
            float(policy.availability_target),
        )
        yield GaugeMetricFamily(
            "sla_slot_success_min_ratio",
            "A slot below this success ratio is unavailable (0.99)",
            float(policy.slot_success_min),
        )

    def _worker(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = GaugeMetricFamily("sla_worker_state", "1 for the state this worker is in", labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if self._health.state == name else 0.0)
        yield state
        ingest = self._pipeline.ingest
        families = {
            "read": ("sla_records_read", "Input records fetched and handed to this worker's counter"),
            "records": ("sla_records", "Input records this worker counted or dead-lettered"),
            "counted": ("sla_events_counted", "Events this worker counted into slots (distinct ids)"),
            "duplicates": ("sla_duplicates", "Events dropped as duplicates of an id already counted"),
            "late": ("sla_late_events", "Events counted into a slot that had closed (a new revision follows)"),
            "redelivered": ("sla_redelivered_batches", "Partition batches skipped as already applied (redelivery)"),
        }
        for attribute, (name, text) in families.items():
            family = CounterMetricFamily(name, text, labels=["topic"])
            for topic, stats in sorted(ingest.items()):
                family.add_metric([topic], getattr(stats, attribute))
            yield family
        letters = CounterMetricFamily(
            "sla_dead_letters", "Records or array elements sent to the dead-letter topic", labels=["topic", "reason"]
        )
        for topic in sorted({self._settings.topics.requests, self._settings.topics.successes, *ingest}):
            reasons = ingest[topic].dead_letter_reasons if topic in ingest else {}
            for reason in REASON_CATEGORIES:  # every reason from 0, so increase() sees the first of a kind
                letters.add_metric([topic, reason], reasons.get(reason, 0))
        yield letters
        verdicts = CounterMetricFamily(
            "sla_verdicts_published", "Verdicts this worker's closer published", labels=["kind"]
        )
        verdicts.add_metric(["first"], self._pipeline.verdicts_first)
        verdicts.add_metric(["revision"], self._pipeline.verdicts_revised)
        yield verdicts
        lag = GaugeMetricFamily(
            "sla_consumer_lag_records",
            "Records of an assigned input partition not yet read",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(self._pipeline.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag

    def _job(self, snapshot: Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The job-wide series that go with the app series: the watermark and the input's coverage."""
        now_s = self._wall_clock()
        if snapshot.watermark_ms is not None:
            yield GaugeMetricFamily(
                "sla_watermark_timestamp_seconds", "The job's event-time watermark", snapshot.watermark_ms / 1000
            )
        if snapshot.coverage is not None:
            coverage = snapshot.coverage
            yield GaugeMetricFamily(
                "sla_input_silent_minutes",
                "Minutes of the running calendar month in silent periods: no event of any app for "
                "[sla] silent_after_minutes or more, up to the watermark (no data, not no traffic)",
                coverage.silent_minutes,
            )
            if coverage.last_ms is not None:
                yield GaugeMetricFamily(
                    "sla_input_covered_until_timestamp_seconds",
                    "The end of the running calendar month's last minute with an event of any app",
                    coverage.last_ms / 1000,
                )
        yield GaugeMetricFamily(
            "sla_watermark_lag_seconds",
            "How far the watermark is behind the wall clock (+Inf while some partition's time is unknown)",
            math.inf if snapshot.watermark_ms is None else now_s - snapshot.watermark_ms / 1000,
        )


@dataclass
class WorkerMetrics:
    """Everything one worker exports, on a registry of its own (served by :mod:`stream.live.web`)."""

    registry: CollectorRegistry
    collector: SlaCollector
    pipeline: PipelineCounts
    tick_seconds: Histogram

    @classmethod
    def create(
        cls,
        settings: Settings,
        health: Health,
        ingest: Mapping[str, IngestStats],
        wall_clock: Callable[[], float] = time.time,
        exports_apps: Callable[[], bool] = lambda: True,
    ) -> WorkerMetrics:
        """The registry of a worker; ``exports_apps`` says when it exports the app series (its group's leader)."""
        registry = CollectorRegistry(auto_describe=False)
        pipeline = PipelineCounts(ingest)
        collector = SlaCollector(settings, health, pipeline, wall_clock, exports_apps)
        registry.register(collector)
        tick = Histogram(
            "sla_closer_tick_seconds",
            "How long one closer tick took (closing, publishing, ledgers)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        return cls(registry, collector, pipeline, tick)

    def exposition(self) -> bytes:
        """``/metrics``: the registry's families (worker, job, Faust's) and the app series, in text format 0.0.4."""
        return generate_latest(self.registry) + self.collector.app_text().encode("utf-8")

    def closer_ticked(self, result: TickResult, seconds: float) -> None:
        """Count what one tick of this worker's closer did, and how long it took."""
        self.tick_seconds.observe(seconds)
        self.pipeline.verdicts_first += result.closed
        self.pipeline.verdicts_revised += result.revised
