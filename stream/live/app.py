"""The Faust app of a worker: the wiring of the batch path, an agent and timers to the live path's parts, nothing else.

Faust brings the consumer group, rebalancing, timers and leader election;
the state and every exactness guarantee live in Redis
(:mod:`stream.live.store`). The input topics skip Faust's streams: each
partition's fetched batch goes whole to the ingester
(:mod:`stream.live.faust_batches`). Faust's windowed tables are not used, and
messages this worker sends (dead letters, verdicts) are sent with
``force=True`` and awaited until acknowledged, never attached to a consumed
event: the Redis state moves on at once, so a message must be out before it
does.

Faults never escape into Faust (an agent that raises is restarted with its
offsets committed past the event): every Redis step waits out an outage
(:mod:`stream.live.health`), every batch is retried until it applies, and
input partitions are read from Redis's positions, never Kafka's committed
offsets (:mod:`stream.live.partitions`).

=====================  ===============================================================
agent / timer          part it runs
=====================  ===============================================================
fetched input batches  :class:`stream.live.ingest.Ingester` (a batch per partition)
``follow_exemptions``  :class:`stream.live.exemptions.ExemptionFollower`
``open_namespace``     :class:`stream.live.namespace.NamespaceGuard` (once, at start)
``close_slots``        :class:`stream.live.closer.ClosingLeader` (leader only)
``report_idle``        :meth:`stream.live.partitions.InputPartitions.report_idle`
``commit_positions``   :meth:`stream.live.partitions.InputPartitions.commit_applied`
``log_ingest_totals``  :class:`stream.live.ingest.TotalsLog`
``refresh_metrics``    :class:`stream.live.metrics.SnapshotReader` into the ``/metrics`` collector
=====================  ===============================================================

With a metrics address, the worker serves ``/metrics`` (:mod:`stream.live.metrics`,
with Faust's own sensors on the same registry) and the live month pages
(:mod:`stream.live.pages`) there, on threads of their own (:mod:`stream.live.web`).

Run one with ``sla-stream worker``; run more in the same group to scale out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from redis.exceptions import RedisError

from stream.config import Settings
from stream.events import TimeBounds
from stream.formats import DeadLetter
from stream.kafka_security import faust_app_options, redact
from stream.live import faust_batches, faust_isolation, faust_positions, web
from stream.live.clock import ClockTiming, IdleTracker
from stream.live.closer import Closer, ClosingLeader
from stream.live.cursors import Cursors
from stream.live.exemptions import ExemptionFollower
from stream.live.health import Health, until_done
from stream.live.ingest import Ingester, TotalsLog
from stream.live.metrics import REFRESH_INTERVAL_S, SnapshotReader, WorkerMetrics, refresh_due
from stream.live.namespace import NamespaceGuard
from stream.live.pages import LivePages
from stream.live.partitions import InputPartitions
from stream.live.probes import BEAT_S, Probes
from stream.live.store import Store, redis_client
from stream.live.verdict_batches import send_in_batches

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 30.0
"""How often a worker logs its ingest totals (when they changed)."""
FETCH_BYTES_PER_PARTITION = 512 * 1024
"""How much a fetch brings per partition: a worker's in-flight batch (Faust's default is 1 MiB).

Measured with `make bench`'s records, side by side with 1 MiB: worker memory
falls from about 157 to 124 MB with one event per record (and 130 to 110 MB
with arrays of 100), arrays count some 20% faster (smaller steps keep the
fetching, the parsing and Redis busy at once) and single records some 10%
slower. A record larger than this is still fetched (Kafka returns it whole).
"""
COMMIT_INTERVAL_S = 3.0
"""How often Redis's positions are committed to Kafka (Faust's own interval is 2.8 s)."""


def create_app(
    settings: Settings,
    input_partitions: dict[str, int],
    earlier_progress: str | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> faust.App:
    """A Faust app wired to ``settings``.

    ``input_partitions`` maps each input topic to its partition count;
    ``earlier_progress`` says what Kafka shows of earlier counting (None:
    nothing), for a namespace found without its marker; ``metrics_at`` is
    where to serve ``/metrics`` (None: nowhere). Raises ``OSError`` when that
    address cannot be bound.
    """
    app = faust.App(
        settings.group,
        **faust_app_options(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        topic_disable_leader=False,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_ms / 1000,
        # A stop or a rebalance does not wait for the batch in hand (it may be waiting out a Redis
        # outage): the offset fence makes finishing it elsewhere, or again, exact.
        stream_wait_empty=False,
    )
    topics = settings.topics
    timing = ClockTiming.of(settings)
    store = Store(
        redis_client(settings.redis_url, cluster=settings.redis_cluster),
        settings.key_prefix,
        settings.redis_shards,
        settings.redis_cluster,
    )
    where = redact(settings.redis_url)
    health = Health(where)
    guard = NamespaceGuard(store, health, where)
    cursors = Cursors()
    partitions = InputPartitions(lambda: app.consumer, store, cursors, input_partitions, IdleTracker(timing))
    dead_letters = app.topic(topics.dead_letter, value_serializer="raw", key_serializer="raw")

    async def send_dead_letter(letter: DeadLetter) -> None:
        delivery = await dead_letters.send(key=letter.key, value=letter.value(), force=True)
        await delivery

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        """Straight to the producer's record batches, not through a Faust topic: a slot boundary of a fleet is
        thousands of messages, and a topic's send (its callbacks, its monitor's sensors) cost more than the
        judging (:mod:`stream.live.verdict_batches`). ``_ensure_producer`` is the aiokafka producer inside Faust's
        (faust-streaming's aiokafka driver; the version is checked at start, :mod:`stream.live.faust_batches`)."""
        await send_in_batches(app.producer._ensure_producer(), topics.verdicts, messages)  # type: ignore[attr-defined]

    def bounds() -> TimeBounds:
        return settings.event_bounds(int(time.time() * 1000))

    faust_positions.install(app, partitions.position_assigned)
    faust_isolation.install(app)
    ingester = Ingester(
        store, settings.policy.timezone, bounds, send_dead_letter, health, guard, cursors, partitions.reseek
    )
    exemptions = ExemptionFollower(store, health, send_dead_letter)
    leader = ClosingLeader(Closer(store, settings, partitions.names, send_verdicts, timing), store, guard, health)
    totals = TotalsLog()
    metrics = WorkerMetrics.create(settings, health, ingester.by_topic, exports_apps=app.is_leader)
    probes = Probes(lambda: health.state)
    if metrics_at is not None:
        pages = LivePages(settings, lambda: metrics.collector.snapshot)
        web.serve(*metrics_at, metrics.exposition, pages, probes, settings.web)
        app.monitor = PrometheusMonitor(FaustMetrics.create(metrics.registry, "faust"))

    @app.on_partitions_assigned.connect
    async def forget_positions(sender: Any, assigned: Any, **kwargs: Any) -> None:
        partitions.forget_positions()

    kinds = topics.input_kinds

    async def count_batches(batches: faust_batches.Batches) -> None:
        """Each partition's batch until it is counted; partitions concurrently (one parses while Redis runs one).

        A step that keeps failing (a bug: Redis outages are waited out inside)
        holds every input partition, loudly, since the fetch loop waits for it.
        """
        for tp, batch in batches.items():
            ingester.took(tp.topic, len(batch))
        await asyncio.gather(
            *(
                until_done(
                    f"counting {len(batch)} records of {tp.topic}:{tp.partition}",
                    lambda tp=tp, batch=batch: ingester.apply_partition(kinds[tp.topic], tp.topic, tp.partition, batch),
                )
                for tp, batch in batches.items()
            )
        )

    faust_batches.install(app, kinds, count_batches, partitions.dropped)

    @app.agent(app.topic(topics.exemptions), name="follow_exemptions", concurrency=1)
    async def follow_exemptions(stream: faust.StreamT) -> None:
        async for event in stream.events():
            m = event.message
            await until_done(
                f"exemption {m.key!r}",
                lambda m=m: exemptions.follow(m.topic, m.partition, m.offset, m.key, m.value),
            )

    @app.task
    async def open_namespace() -> None:
        await guard.open(earlier_progress)
        await exemptions.judge_config_windows_again(settings)

    @app.timer(interval=timing.report_interval_s, on_leader=True)
    async def close_slots() -> None:
        started = time.perf_counter()
        result = await leader.tick()
        if result is not None:
            metrics.closer_ticked(result, time.perf_counter() - started)

    snapshots = SnapshotReader()

    @app.timer(interval=REFRESH_INTERVAL_S)
    async def refresh_metrics() -> None:
        """Read the app series from Redis; not while the state is lost or rebuilt (they would fall, then climb)."""
        metrics.pipeline.consumer_lag = partitions.lag
        if metrics_at is None or health.state in ("refusing", "rebuilding"):
            return
        now_ms = int(time.time() * 1000)
        try:
            if not refresh_due(metrics.collector.snapshot, now_ms, await store.closer_ticking()):
                return
            metrics.collector.snapshot = await snapshots.read(store, settings, partitions.names, now_ms)
        except (RedisError, OSError) as error:
            health.redis_failed(error)
            return
        except Exception:  # noqa: BLE001 - a timer that raises stops Faust; the next refresh tries again
            log.exception("metrics snapshot failed")
            return
        health.redis_answered()

    @app.timer(interval=COMMIT_INTERVAL_S)
    async def commit_positions() -> None:
        """Redis's positions to the group's committed offsets: for lag tools, and the lost-state check at start."""
        try:
            await partitions.commit_applied()
        except Exception as error:  # noqa: BLE001 - a timer that raises stops Faust; the next commit tries again
            log.debug("committing positions skipped: %s", error)

    @app.timer(interval=BEAT_S)
    async def heartbeat() -> None:
        """The loop ran: ``/healthz`` says alive while this keeps coming."""
        probes.beat()

    @app.timer(interval=STATS_INTERVAL_S)
    async def log_ingest_totals() -> None:
        totals.log_if_changed(ingester.stats, health.state)

    @app.timer(interval=timing.report_interval_s)
    async def report_idle() -> None:
        """Idle reports while counting, and while paused: a quiet worker's report is what notices Redis is back."""
        if health.state not in ("counting", "paused"):
            return
        try:
            await partitions.report_idle()
        except (RedisError, OSError) as error:
            health.redis_failed(error)
            return
        except Exception as error:  # noqa: BLE001 - a timer that raises stops Faust: a rebalance moved a partition
            log.debug("idle report skipped: %s", error)
            return
        health.redis_answered()

    return app
