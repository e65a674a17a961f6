"""What a worker's log says: each change of Kafka's state once, and lines a log pipeline can read (JSON).

A broker that goes away makes aiokafka (and Faust's driver over it) log an
error for every connection attempt and every failed fetch: 110 to 170 lines
a second, burying everything else. :class:`KafkaOutageLines` lets the first
such line through, reworded to say what it means for counting, holds the
rest back, and says once when Kafka answers again: when no Kafka error has
come for :data:`QUIET_S` (during an outage they come several times a
second). Nothing is skipped meanwhile: positions are Redis's, so counting
resumes where it stopped.

:class:`JsonLines` formats every record as one JSON object a line
(``--log-format json``).

Example:
    >>> now = [0.0]
    >>> lines = KafkaOutageLines("127.0.0.1:9092", clock=lambda: now[0])
    >>> def error(text):
    ...     return logging.LogRecord("aiokafka.conn", logging.ERROR, "", 0, text, None, None)
    >>> first = error("Unable connect to node with id 1: [Errno 111] Connect call failed")
    >>> lines.filter(first), lines.filter(error("Unable connect to node with id 1: again"))
    (True, False)
    >>> first.getMessage()[:73]
    'Kafka at 127.0.0.1:9092 is unreachable (Unable connect to node with id 1:'
    >>> now[0] = 5.0; lines.answered_again()
    >>> now[0] = 12.0; lines.answered_again()
    'Kafka at 127.0.0.1:9092 answers again (no error for 10 s, 12 s after the first): counting resumes where it stopped'
    >>> rebalance = logging.LogRecord("aiokafka.consumer.group_coordinator", logging.WARNING, "", 0,
    ...                               "Heartbeat failed for group g because it is rebalancing", None, None)
    >>> lines.filter(rebalance), rebalance.getMessage()[:16]
    (True, 'Heartbeat failed')
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

QUIET_S = 10.0
"""No Kafka error for this long after an outage began means Kafka answers again."""
KAFKA_LOGGERS = ("aiokafka", "kafka", "faust.transport")
"""The loggers whose warnings and errors during an outage are all the same news."""
UNREACHABLE = re.compile(
    r"unable connect|connect call failed|unable to update metadata|failed fetch|marking the coordinator dead|"
    r"coordinator request failed|heartbeat send request failed|nodenotready|kafkaconnectionerror|requesttimedout",
    re.IGNORECASE,
)
"""What those loggers say when the broker cannot be reached (not a rebalance, which is news of its own)."""


class KafkaOutageLines(logging.Filter):
    """Put on the root logger's handlers: the first Kafka warning or error of an outage passes, reworded; the rest
    are held back until :meth:`answered_again` sees none for :data:`QUIET_S`."""

    def __init__(self, bootstrap: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._clock = clock
        self._down_since: float | None = None
        self._last_error = 0.0
        self.held_back = 0
        """Lines held back in the current outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(KAFKA_LOGGERS):
            return True
        if not UNREACHABLE.search(record.getMessage()):
            return True
        self._last_error = self._clock()
        if self._down_since is not None:
            self.held_back += 1
            return False
        self._down_since = self._last_error
        first = record.getMessage().splitlines()[0][:200] if record.getMessage() else type(record).__name__
        record.msg = (
            f"Kafka at {self._bootstrap} is unreachable ({first}): counting waits, nothing is skipped; "
            "further Kafka errors are held back until it answers again"
        )
        record.args = None
        return True

    def answered_again(self) -> str | None:
        """The line saying Kafka is back, once, when an outage has had no error for :data:`QUIET_S`; else None."""
        if self._down_since is None or self._clock() - self._last_error < QUIET_S:
            return None
        began = self._clock() - self._down_since
        self._down_since = None
        self.held_back = 0
        return (
            f"Kafka at {self._bootstrap} answers again (no error for {QUIET_S:.0f} s, {began:.0f} s after the first): "
            "counting resumes where it stopped"
        )


class JsonLines(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and ``exception``.

    Example:
        >>> record = logging.LogRecord("stream.live", logging.WARNING, "", 0, "Redis %s", ("gone",), None)
        >>> record.created = 0.0
        >>> json.loads(JsonLines().format(record))
        {'time': '1970-01-01T00:00:00.000+00:00', 'level': 'WARNING', 'logger': 'stream.live', 'message': 'Redis gone'}
    """

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
