"""The Faust worker: agents that count the input topics, the closer, and the exemptions feed.

Faust brings the consumer group, rebalancing, timers and leader election;
the state and every exactness guarantee live in Redis (:mod:`stream.store`).
Following DESIGN.md, agents run with ``concurrency=1`` and take events in
batches, Faust's windowed tables are not used, and messages this worker
sends (dead letters, verdicts) are sent with ``force=True`` and awaited until
acknowledged, never attached to the consumed event: the Redis state moves on
at once, so a message must be out before it does.

Faults never escape into Faust (it would restart the agent and commit the
offsets past the batch): every Redis step waits out an outage
(:mod:`stream.live.health`), every batch is retried until it applies, and
input partitions are read from Redis's positions, never Kafka's committed
offsets (:mod:`stream.live.cursors`): after each rebalance, a partition is
positioned at Redis's applied offset + 1 before anything of it is counted.

Run one with ``sla-stream worker``; run more in the same group to scale out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import TP
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.closer import Closer
from stream.config import Settings
from stream.dead_letter import DeadLetter
from stream.events import InvalidEvent, Rejected, TimeBounds
from stream.exemption_feed import decode_exemption, exemption_from_json, judge_windows_again
from stream.ingest import Ingester, Record
from stream.kafka_security import faust_app_options, redact
from stream.live import faust_isolation, faust_positions
from stream.live.cursors import Cursors
from stream.live.health import Backoff, Health
from stream.live.namespace import NamespaceGuard
from stream.sla.counting import EventKind
from stream.store import Fenced, RolledBack, Store

log = logging.getLogger(__name__)

TAKE_MAX = 10_000
"""Records per ``take_events`` batch: one Redis round trip per partition per batch."""
TAKE_WITHIN_S = 0.05


CLOSE_INTERVAL_S = 1.0
"""How often the leader closes due slots and publishes verdicts."""
STATS_INTERVAL_S = 30.0
"""How often a worker logs its ingest totals (when they changed)."""
CLOSER_LEASE_S = 5.0
"""The closer's Redis lease, renewed while a tick runs: a killed leader's lease lapses within this."""
IDLE_AFTER_S = 2.0
"""A caught-up input partition with no new records for this long is reported idle."""
REDIS_SOCKET_TIMEOUT_S = 10.0
"""A Redis call that has not answered in this long fails (and is retried): nothing waits forever on a dead socket."""


def _tp_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def redis_client(url: str) -> Redis:
    """The worker's Redis client: bounded connect and call times, so an outage is noticed and waited out.

    A call that fails on a connection is retried twice on a fresh one first:
    after Redis restarts, every pooled connection fails once, and that is
    not an outage. (A retried script is safe: the offset fence and the
    verdict's compare-and-set make a repeat a no-op.)
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


async def until_done(what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` until it returns: an unexpected error is logged (with its traceback, once) and retried.

    The agents' last line of defence: Faust commits past a batch whose agent
    raised, so nothing may raise; a step that keeps failing holds its
    partition (loudly) rather than skipping it.
    """
    backoff = Backoff(cap_s=5.0)
    failures = 0
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            if failures == 1:
                log.exception("%s failed; retrying the same records until it succeeds", what)
            elif failures % 20 == 0:
                log.error("%s still failing after %d attempts; the partition waits", what, failures)
            await backoff.wait()


@contextlib.asynccontextmanager
async def renewed(lease: Lock, every_s: float) -> AsyncIterator[None]:
    """Keep ``lease`` (already acquired) alive while the block runs; release it after."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(LockError, RedisError, OSError):
                await lease.reacquire()

    keeper = asyncio.create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(LockError, RedisError, OSError):
            await lease.release()


def create_app(
    settings: Settings,
    input_partitions: dict[str, int],
    earlier_progress: str | None = None,
) -> faust.App:
    """A Faust app wired to ``settings``.

    ``input_partitions`` maps each input topic to its partition count;
    ``earlier_progress`` says what Kafka shows of earlier counting (None:
    nothing), for a namespace found without its marker.
    """
    app = faust.App(
        settings.group,
        **faust_app_options(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=False,
        stream_buffer_maxsize=TAKE_MAX,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_ms / 1000,
        # A stop or a rebalance does not wait for the batch in hand (it may be waiting out a Redis
        # outage): the offset fence makes finishing it elsewhere, or again, exact.
        stream_wait_empty=False,
    )
    topics = settings.topics
    redis = redis_client(settings.redis_url)
    store = Store(redis, settings.key_prefix)
    where = redact(settings.redis_url)
    health = Health(where)
    guard = NamespaceGuard(store, health, where)
    cursors = Cursors()
    tz = settings.policy.timezone
    dead_letters = app.topic(topics.dead_letter, value_serializer="raw", key_serializer="raw")
    verdicts = app.topic(topics.verdicts, value_serializer="raw", key_serializer="raw")

    async def send_dead_letter(letter: DeadLetter) -> None:
        delivery = await dead_letters.send(key=letter.key, value=letter.value(), force=True)
        await delivery

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        deliveries = [
            await verdicts.send(key=key.encode(), value=value.encode(), force=True) for key, value in messages
        ]
        await asyncio.gather(*deliveries)

    def bounds() -> TimeBounds:
        return TimeBounds(settings.earliest_event_ms, int(time.time() * 1000) + settings.max_future_ms)

    async def reseek(tp_name: str, applied: int) -> None:
        """Position this worker's consumer of ``tp_name`` right after Redis's applied offset."""
        topic, _, partition = tp_name.rpartition(":")
        tp = TP(topic, int(partition))
        if tp not in app.consumer.assignment():
            cursors.forget([tp_name])  # revoked meanwhile: whoever has it now positions it
            return
        offset = applied + 1 if applied >= 0 else (await app.consumer.earliest_offsets(tp))[tp]
        await app.consumer.seek_wait({tp: offset})  # in the consumer's own thread: a plain seek races its fetcher
        cursors.sought(tp_name, applied)
        log.info("%s: reading from offset %d (Redis's applied offset + 1)", tp_name, offset)

    async def position_assigned() -> None:
        """Faust has just sought its partitions to Kafka's committed offsets: seek the input ones to Redis's.

        One attempt: if Redis does not answer now, each partition is
        positioned on its first batch instead (the ingester waits for Redis).
        """
        assigned = {
            _tp_name(tp.topic, tp.partition): tp for tp in app.consumer.assignment() if tp.topic in input_partitions
        }
        if not assigned:
            return
        try:
            applied = await store.applied_offsets(assigned)
            unknown = [tp for name, tp in assigned.items() if applied[name] is None]
            earliest = await app.consumer.earliest_offsets(*unknown) if unknown else {}
            await app.consumer.seek_wait(
                {tp: earliest[tp] if applied[name] is None else applied[name] + 1 for name, tp in assigned.items()}
            )
        except Exception as error:  # noqa: BLE001 - Redis away, or a rebalance moved them: positioned lazily
            log.info("input partitions not positioned at assignment (%s); each is on its first batch", error)
            cursors.forget(assigned)
            return
        for name in assigned:
            found = applied[name]
            cursors.sought(name, -1 if found is None else found)
        log.info("input partitions read from Redis's positions: %s", ", ".join(sorted(assigned)))

    faust_positions.install(app, input_partitions, position_assigned)
    faust_isolation.install(app)
    ingester = Ingester(store, tz, bounds, send_dead_letter, health, guard, cursors, reseek)
    input_tps = [_tp_name(topic, p) for topic, count in input_partitions.items() for p in range(count)]
    closer = Closer(store, settings, input_tps, send_verdicts)

    @app.on_partitions_assigned.connect
    async def forget_positions(sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Faust has just sought every partition to Kafka's committed offset: position them from Redis again."""
        cursors.forget(input_tps)

    def ingest_agent(kind: EventKind) -> Any:
        async def ingest(stream: faust.StreamT) -> None:
            async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
                records = [
                    Record(e.message.topic, e.message.partition, e.message.offset, e.message.value) for e in events
                ]
                await until_done(
                    f"counting {len(records)} {kind} records", lambda records=records: ingester.apply(kind, records)
                )

        return ingest

    app.agent(app.topic(topics.requests), name="ingest_requests", concurrency=1)(ingest_agent("request"))
    app.agent(app.topic(topics.successes), name="ingest_successes", concurrency=1)(ingest_agent("success"))

    async def follow_exemption(message: Any) -> None:
        exemption_id = (message.key or b"").decode("utf-8", errors="replace")
        previous = (await health.until_redis_answers(store.exemptions)).get(exemption_id)
        touched = [exemption_from_json(previous)] if previous else []
        if message.value is None:
            await health.until_redis_answers(lambda: store.put_exemption(exemption_id, None))
        else:
            try:
                record = decode_exemption(message.value)
            except InvalidEvent as error:
                letter = DeadLetter(
                    message.topic, message.partition, message.offset, Rejected(str(error), message.value)
                )
                await send_dead_letter(letter)
                return
            await health.until_redis_answers(lambda: store.put_exemption(exemption_id, record))
            touched.append(exemption_from_json(record))
        await health.until_redis_answers(lambda: judge_windows_again(store, touched))

    @app.agent(app.topic(topics.exemptions), name="follow_exemptions", concurrency=1)
    async def follow_exemptions(stream: faust.StreamT) -> None:
        """Record exemptions (a null value withdraws one) and have the slots they touch judged again."""
        async for event in stream.events():
            message = event.message
            await until_done(f"exemption {message.key!r}", lambda message=message: follow_exemption(message))

    @app.task
    async def open_namespace() -> None:
        """Take up the live state's generation (or initialise it), then judge config exemptions' slots again.

        Exemptions in the config file may have been added since slots closed.
        """
        await guard.open(earlier_progress)
        await health.until_redis_answers(lambda: judge_windows_again(store, settings.exemptions))

    @app.timer(interval=CLOSE_INTERVAL_S, on_leader=True)
    async def close_slots() -> None:
        """Close due slots from one place: the leader, holding a Redis lease against a rebalance overlap."""
        try:
            fence = guard.fence or await guard.refresh()
            if fence is None:
                return
            lease = redis.lock(store.key("lock", "closer"), timeout=CLOSER_LEASE_S)
            if not await lease.acquire(blocking=False):
                return
            async with renewed(lease, CLOSER_LEASE_S / 3):
                result = await closer.tick(fence)
        except Fenced:
            guard.stale()
            return
        except RolledBack:
            await guard.lost_writes(fence)
            return
        except (RedisError, OSError) as error:
            health.redis_failed(error)
            return
        except Exception:
            log.exception("closer tick failed; retrying in %.0f s", CLOSE_INTERVAL_S)
            return
        health.redis_answered()
        if result.closed or result.revised:
            log.info(
                "closed %d slots, revised %d, published %d (watermark %s)",
                result.closed,
                result.revised,
                result.published,
                result.watermark_ms,
            )

    logged: list[str] = [""]

    @app.timer(interval=STATS_INTERVAL_S)
    async def log_ingest_totals() -> None:
        """What this worker has counted since it started, when that changed."""
        line = f"{ingester.stats} ({health.state})"
        if line != logged[0]:
            log.info("ingest: %s", line)
            logged[0] = line

    progress: dict[str, tuple[int | None, float]] = {}

    async def idle_partitions() -> None:
        """Report each assigned input partition idle (caught up, quiet for ``IDLE_AFTER_S``) or busy.

        Caught up is the consumer's position at the last stable offset (the
        end offset under read_committed) with nothing handed to the ingester
        beyond Redis's applied offset. Not "applied offset + 1 >= end": the
        last offsets of a partition may be transaction markers or other
        offsets no record is ever delivered for.
        """
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in input_partitions]
        if not assigned:
            return
        ends = await app.consumer.highwaters(*assigned)
        positions = {tp: await app.consumer.position(tp) for tp in assigned}
        names = {tp: _tp_name(tp.topic, tp.partition) for tp in assigned}
        applied = await store.applied_offsets(names.values())
        now = time.time()
        idle: dict[str, int] = {}
        busy: list[str] = []
        for tp, name in names.items():
            offset = applied[name]
            last_offset, since = progress.get(name, (offset, 0.0))
            if offset != last_offset:
                since = now
            progress[name] = (offset, since)
            cursor, end, position = cursors.get(name), ends.get(tp), positions[tp]
            all_applied = cursor is not None and cursor.delivered <= (-1 if offset is None else offset)
            caught_up = all_applied and end is not None and position is not None and position >= end
            if caught_up and now - since >= IDLE_AFTER_S:
                idle[name] = int(now * 1000)
            else:
                busy.append(name)
        await store.mark_idle(idle, busy)

    @app.timer(interval=1.0)
    async def report_idle_partitions() -> None:
        """Tell the closer which of this worker's input partitions are caught up and quiet (while counting)."""
        if health.state != "counting":
            return
        try:
            await idle_partitions()
        except (RedisError, OSError) as error:
            health.redis_failed(error)
        except Exception as error:  # noqa: BLE001 - a timer that raises stops Faust: a rebalance moved a partition
            log.debug("idle report skipped: %s", error)

    return app
