"""Starting a worker process: check the broker and topics, then hand over to Faust.

Problems found before Faust starts (broker unreachable, an input topic
missing) stop the worker with one line saying what is wrong; once running,
bad data never stops it (it goes to the dead-letter topic).

A stop (SIGTERM, Ctrl-C) is bounded: if Faust has not finished stopping
within :data:`STOP_GRACE_S`, the process exits anyway. Nothing is lost by
that: the state is in Redis and every position is read from there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from faust.worker import Worker
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.kafka_security import kafka_python_options, redact
from stream.live.app import create_app
from stream.live.faust_positions import FaustVersionError
from stream.live.log_lines import JsonLines, KafkaOutageLines
from stream.live.store import LayoutMismatch, Store, redis_client
from stream.tools.topics import check_topics

log = logging.getLogger(__name__)


class WorkerStartError(Exception):
    """Why a worker cannot start; printed as one line."""


def input_partitions(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Partition counts of the two input topics, read from the broker (connecting as ``[kafka.security]`` says)."""
    return partition_counts(settings, (settings.topics.requests, settings.topics.successes), timeout_s)


def partition_counts(settings: Settings, names: Sequence[str], timeout_s: float = 10.0) -> dict[str, int]:
    """Partition counts of the topics ``names``; :class:`WorkerStartError` names one that does not exist."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **kafka_python_options(settings.kafka_security),
        )
    except KafkaError as error:
        raise WorkerStartError(redact(f"cannot reach Kafka at {settings.kafka_bootstrap}: {error}")) from None
    try:
        counts = {}
        for name in names:
            partitions = consumer.partitions_for_topic(name)
            if not partitions:
                raise WorkerStartError(f"topic {name} does not exist; create it with `sla-stream topics`")
            counts[name] = len(partitions)
        return counts
    finally:
        consumer.close()


STOP_GRACE_S = 20.0
"""How long a stopping worker may take before it exits regardless (Faust can hang in "Consumer: Stopping...")."""
KAFKA_CHECK_S = 2.0
"""How often a worker looks whether Kafka's errors have stopped (to say it answers again)."""


def earlier_progress(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """What Kafka shows of counting done before (committed input offsets, published verdicts), in words; None: nothing.

    Asked only when Redis has no live state: progress means the state was
    lost, not that this is a new deployment.
    """
    found = []
    security = kafka_python_options(settings.kafka_security)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000), **security
    )
    try:
        committed = _group_offsets(admin, settings.group, timeout_s)
    finally:
        admin.close()
    inputs = (settings.topics.requests, settings.topics.successes)
    ahead = sorted((tp.topic, tp.partition, meta.offset) for tp, meta in committed.items() if tp.topic in inputs)
    ahead = [entry for entry in ahead if entry[2] > 0]
    if ahead:
        topic, partition, offset = ahead[0]
        found.append(
            f"consumer group {settings.group!r} has committed offsets on {len(ahead)} input partitions "
            f"(e.g. {topic}:{partition} at {offset})"
        )
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000), **security
    )
    try:
        partitions = consumer.partitions_for_topic(settings.topics.verdicts) or set()
        ends = consumer.end_offsets([TopicPartition(settings.topics.verdicts, p) for p in partitions])
    finally:
        consumer.close()
    verdicts = sum(ends.values())
    if verdicts:
        found.append(f"the verdicts topic {settings.topics.verdicts} holds {verdicts:,} records")
    return " and ".join(found) or None


def _group_offsets(admin: KafkaAdminClient, group: str, timeout_s: float) -> dict[TopicPartition, Any]:
    """The group's committed offsets (a new broker says "coordinator not available" until its offsets topic exists)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_group_offsets(group).get(group, {})
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class BoundedStopWorker(Worker):
    """Faust's worker, but a stop that takes longer than ``STOP_GRACE_S`` ends the process, and its log says
    each change of Kafka's state once (:class:`~stream.live.log_lines.KafkaOutageLines`), as text or JSON lines."""

    def __init__(self, *services: Any, lines: KafkaOutageLines, log_format: str = "text", **kwargs: Any) -> None:
        self._lines = lines
        self._log_format = log_format
        super().__init__(*services, **kwargs)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        for handler in logger.handlers:
            handler.addFilter(self._lines)
            if self._log_format == "json":
                handler.setFormatter(JsonLines())

    def _on_sigterm(self) -> None:
        _exit_after(STOP_GRACE_S)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_after(STOP_GRACE_S)
        super()._on_sigint()


def _exit_after(seconds: float) -> None:
    def expire() -> None:
        logging.getLogger(__name__).error("worker did not stop within %.0f s; exiting now", seconds)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def check_layout(settings: Settings) -> None:
    """Refuse to start on a live state made with another number of shards (Redis away: the worker waits it out)."""

    async def read() -> None:
        redis = redis_client(settings.redis_url, socket_timeout_s=5.0, cluster=settings.redis_cluster)
        try:
            await Store.of(redis, settings).meta()
        finally:
            await redis.aclose()

    try:
        asyncio.run(read())
    except LayoutMismatch as error:
        raise WorkerStartError(str(error)) from None
    except (RedisError, OSError) as error:
        log.info("the live state's layout not checked at start (%s): Redis is waited for", redact(str(error)))


def run_worker(
    settings: Settings, loglevel: str = "info", metrics_at: tuple[str, int] | None = None, log_format: str = "text"
) -> None:
    """Run one worker until it is stopped (SIGINT/SIGTERM stop it, within ``STOP_GRACE_S``).

    ``metrics_at`` is where to serve ``/metrics`` (None: nowhere); ``log_format`` ``text`` or ``json``.
    """
    problems = check_topics(settings)
    if problems:
        raise WorkerStartError(
            f"{problems[0]} (and {len(problems) - 1} more; run `sla-stream topics --check`)"
            if len(problems) > 1
            else f"{problems[0]} (run `sla-stream topics`)"
        )
    check_layout(settings)
    partitions = input_partitions(settings)
    try:
        progress = earlier_progress(settings)
    except KafkaError as error:
        raise WorkerStartError(redact(f"cannot read the consumer group and topics from Kafka: {error}")) from None
    try:
        app = create_app(settings, partitions, earlier_progress=progress, metrics_at=metrics_at)
    except FaustVersionError as error:
        raise WorkerStartError(str(error)) from None
    except OSError as error:
        host, port = metrics_at or ("", 0)
        raise WorkerStartError(
            f"cannot serve metrics on {host}:{port} ({error.strerror or error}); another worker on this machine? "
            "give each its own --metrics-port, or --metrics-port off"
        ) from None
    lines = KafkaOutageLines(redact(settings.kafka_bootstrap))

    @app.timer(interval=KAFKA_CHECK_S)
    async def say_when_kafka_answers() -> None:
        """The one line saying Kafka is back, once its errors have stopped."""
        back = lines.answered_again()
        if back is not None:
            log.warning("%s", back)

    logging.getLogger("stream").setLevel(loglevel.upper())
    BoundedStopWorker(app, lines=lines, log_format=log_format, loglevel=loglevel, quiet=True).execute_from_commandline()
