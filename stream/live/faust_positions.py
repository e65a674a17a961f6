"""Faust's own read offsets switched off for the input topics, and its seeks followed by Redis's positions.

Why: faust-streaming 0.15.3's ``Consumer._drain_messages`` drops every
fetched record below the partition's *read offset* (``Consumer._read_offset``,
the offset of the last record it handed on, or where it last sought), and
sets it after each record it hands on. When this worker seeks an input
partition back to Redis's applied offset + 1 (:mod:`stream.live.cursors`)
while the drain loop is still handing on the rest of an earlier fetch, the
loop sets the read offset past the seek, and the records fetched again from
the seek position are then dropped by Faust: the partition would stall, or
(worse) continue across a gap.

What: the consumer's read-offset mapping is replaced by one that knows no
read offset for the input topics (reads give ``None``, writes and deletes
are ignored), so Faust hands on every record of them. Dropping what was
already applied is done exactly, by the cursors and Redis's offset fence.
Other topics (exemptions, Faust's own) keep Faust's behaviour.

And: every time Faust seeks the assigned partitions to Kafka's committed
offsets (``Consumer.perform_seek``, after each rebalance, before fetching
resumes), ``after_seek`` is called right after, to position the input
partitions at Redis's applied offsets before anything is fetched from the
wrong place. (Without it the ingester still positions a partition on its
first batch, dropping that batch: correct, but a backlog is fetched twice.)

The replacement is checked against the Faust version it was written for; any
other version stops the worker at start, loudly, rather than run unsafe.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

WRITTEN_FOR = "0.15.3"


class FaustVersionError(RuntimeError):
    """The installed faust-streaming is not the one this module's patch was written and tested for."""


class ReadOffsetsSkippingTopics(defaultdict):  # type: ignore[type-arg]
    """Faust's read offsets, with none kept for ``topics`` (Faust then never drops their records)."""

    def __init__(self, topics: Iterable[str], existing: dict[Any, Any]) -> None:
        super().__init__(lambda: None)
        self._topics = frozenset(topics)
        for tp, offset in existing.items():
            self[tp] = offset

    def _skipped(self, tp: Any) -> bool:
        return getattr(tp, "topic", None) in self._topics

    def __getitem__(self, tp: Any) -> Any:
        return None if self._skipped(tp) else super().__getitem__(tp)

    def __setitem__(self, tp: Any, offset: Any) -> None:
        if not self._skipped(tp):
            super().__setitem__(tp, offset)

    def __delitem__(self, tp: Any) -> None:
        if not self._skipped(tp):
            super().__delitem__(tp)

    def __contains__(self, tp: object) -> bool:
        return not self._skipped(tp) and super().__contains__(tp)

    def pop(self, tp: Any, *default: Any) -> Any:
        return default[0] if self._skipped(tp) and default else super().pop(tp, *default)


def install(app: faust.App, input_topics: Iterable[str], after_seek: Callable[[], Awaitable[None]]) -> None:
    """Turn Faust's read offsets off for ``input_topics`` on ``app``'s consumer; follow its seeks with ``after_seek``.

    Call before the consumer starts fetching.
    """
    if faust.__version__ != WRITTEN_FOR:
        raise FaustVersionError(
            f"faust-streaming {faust.__version__} is installed, but the worker's read-offset handling was written "
            f"for {WRITTEN_FOR} (stream/live/faust_positions.py); install {WRITTEN_FOR} (pip install -e .)"
        )
    consumer = app.consumer
    current = getattr(consumer, "_read_offset", None)
    if not isinstance(current, defaultdict):
        raise FaustVersionError("faust's Consumer._read_offset is not the mapping this worker expects")
    consumer._read_offset = ReadOffsetsSkippingTopics(input_topics, current)
    seek_to_committed = consumer.perform_seek

    async def perform_seek() -> None:
        await seek_to_committed()
        await after_seek()

    consumer.perform_seek = perform_seek
