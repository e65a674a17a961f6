"""The worker's consumer reads committed records only (``isolation_level=read_committed``).

Why: producers that write transactionally (Kafka Streams and Flink sinks,
idempotent retries under exactly-once) abort transactions; a consumer that
reads uncommitted records counts the aborted events, and a retrying producer
would lower a customer's success rate. faust-streaming 0.15.3 creates its
consumer with ``read_committed`` only when the app itself runs transactions
(``processing_guarantee="exactly_once"``, which this project does not use:
docs/design.md, "Faust"), and offers no setting for it.

What: the app's consumer thread builds its ``aiokafka.AIOKafkaConsumer`` as
Faust does, then the isolation level is set before the consumer starts
(aiokafka hands it to its fetcher in ``start()``). Under ``read_committed``
the end offsets Faust reports (``Consumer.highwaters``) are the last stable
offsets, which is what caught-up is measured against.

Checked against the Faust and aiokafka versions it was written for; any other
stops the worker at start.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust

from stream.live.faust_positions import WRITTEN_FOR, FaustVersionError

AIOKAFKA_WRITTEN_FOR = ("0.13", "0.14")


def install(app: faust.App) -> None:
    """Make ``app``'s worker consumer read committed records only (before the consumer starts)."""
    if faust.__version__ != WRITTEN_FOR or not aiokafka.__version__.startswith(AIOKAFKA_WRITTEN_FOR):
        raise FaustVersionError(
            f"faust-streaming {faust.__version__} with aiokafka {aiokafka.__version__}: the read_committed "
            f"setting (stream/live/faust_isolation.py) was written for faust-streaming {WRITTEN_FOR} with "
            f"aiokafka {' or '.join(AIOKAFKA_WRITTEN_FOR)}"
        )
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_reading_committed(transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = create(transport)
        if not hasattr(consumer, "_isolation_level"):
            raise FaustVersionError("aiokafka's consumer no longer keeps _isolation_level until start()")
        consumer._isolation_level = "read_committed"
        return consumer

    thread._create_worker_consumer = create_reading_committed
