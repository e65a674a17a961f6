"""Starting a worker process: check the broker and topics, then hand over to Faust.

Problems found before Faust starts (broker unreachable, an input topic
missing) stop the worker with one line saying what is wrong; once running,
bad data never stops it (it goes to the dead-letter topic).
"""

from __future__ import annotations

import logging

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from stream import faust_fastpath
from stream.app import create_app
from stream.config import Settings
from stream.topics import check_topics


class WorkerStartError(Exception):
    """Why a worker cannot start; printed as one line."""


def input_partitions(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Partition counts of the two input topics, read from the broker."""
    names = (settings.topics.requests, settings.topics.successes)
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000))
    except KafkaError as error:
        raise WorkerStartError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {error}") from None
    try:
        counts = {}
        for name in names:
            partitions = consumer.partitions_for_topic(name)
            if not partitions:
                raise WorkerStartError(f"input topic {name} does not exist; create it with `sla-stream topics`")
            counts[name] = len(partitions)
        return counts
    finally:
        consumer.close()


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until it is stopped (SIGINT/SIGTERM stop it cleanly)."""
    from faust.worker import Worker

    problems = check_topics(settings)
    if problems:
        raise WorkerStartError(
            f"{problems[0]} (and {len(problems) - 1} more; run `sla-stream topics --check`)"
            if len(problems) > 1
            else f"{problems[0]} (run `sla-stream topics`)"
        )
    partitions = input_partitions(settings)
    faust_fastpath.install()
    app = create_app(settings, partitions)
    logging.getLogger("stream").setLevel(loglevel.upper())
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
