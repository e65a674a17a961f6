"""Faust's seeks of the input partitions followed at once by Redis's positions.

Why: every time Faust seeks the assigned partitions to Kafka's committed
offsets (``Consumer.perform_seek``, after each rebalance, before fetching
resumes), the input partitions are at the wrong place: Redis's applied
offsets are the truth (:mod:`stream.live.cursors`).

What: ``after_seek`` is called right after Faust's seek, to position the
input partitions at Redis's applied offsets before anything is fetched from
the wrong place. (Without it the ingester still positions a partition on its
first batch, dropping that batch: correct, but a backlog is fetched twice.)

Faust's read offsets (``Consumer._read_offset``, which its drain loop uses to
drop records it thinks it has handed on) never see the input topics: their
records do not go through the drain loop (:mod:`stream.live.faust_batches`).

The Faust version is checked; any other stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust

WRITTEN_FOR = "0.15.3"


class FaustVersionError(RuntimeError):
    """The installed faust-streaming is not the one this module's patch was written and tested for."""


def install(app: faust.App, after_seek: Callable[[], Awaitable[None]]) -> None:
    """Follow every seek of ``app``'s consumer to the committed offsets with ``after_seek``; call before it starts."""
    if faust.__version__ != WRITTEN_FOR:
        raise FaustVersionError(
            f"faust-streaming {faust.__version__} is installed, but the worker's positioning was written "
            f"for {WRITTEN_FOR} (stream/live/faust_positions.py); install {WRITTEN_FOR} (pip install -e .)"
        )
    consumer = app.consumer
    seek_to_committed = consumer.perform_seek

    async def perform_seek() -> None:
        await seek_to_committed()
        await after_seek()

    consumer.perform_seek = perform_seek
