"""The input topics read a fetched batch at a time: taken from Faust's consumer whole, past its per-record streams.

Why: faust-streaming turns every consumed record into a message, an event
and a trip through a stream's buffer to an agent, some tens of µs a record;
counting an event takes a few. With one event per record, which is how most
producers write, that machinery was nine tenths of a worker's time.

What: every record Faust consumes comes out of one call,
``ThreadDelegateConsumer._getmany(active_partitions, timeout)`` (faust-streaming
0.15.3), which returns what the aiokafka consumer fetched, as
``{TP: [ConsumerRecord, ...]}`` in offset order. :func:`install` wraps that
call on the app's consumer: the input topics' records are taken out and
handed to ``take`` in one call, a batch per partition; what is left (the
exemptions topic) goes on through Faust unchanged. Faust keeps everything
else: the consumer group and its rebalances, timers, leader election,
sensors.

The drain loop waits for ``take``: a worker has at most one batch per
partition handed over and not yet counted (aiokafka may hold the next one
fetched meanwhile). Positions come from Redis (:mod:`stream.live.cursors`),
so a restart reads again exactly what Redis had not applied. Since the records
never reach a stream, Faust neither acknowledges nor commits them: the
worker commits Redis's positions itself
(:meth:`stream.live.partitions.InputPartitions.commit_applied`), for tools
that watch a group's lag.

A batch fetched while a rebalance stopped the flow, or across a change of
the group's generation, is not handed on (its partition may belong to
another worker now): ``dropped`` receives those partitions, which must then
be positioned again before anything of them is counted (the consumer has
moved past the batch); the worker's next idle report does so, should no
record of theirs come first.

The input topics are registered with the app's conductor without an agent
and without acknowledgements, so the consumer subscribes to them and Faust's
stall detector does not wait for acknowledgements that never come.

Everything touched is checked against the Faust version it was written for;
any other stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP

from stream.live.faust_positions import WRITTEN_FOR, FaustVersionError

Batches = Mapping[TP, Sequence[Any]]
"""Fetched records of the input topics by partition (aiokafka ``ConsumerRecord``: topic, partition, offset, value)."""
TakeBatches = Callable[[Batches], Awaitable[None]]
DropBatches = Callable[[Iterable[TP]], None]


def install(app: faust.App, input_topics: Iterable[str], take: TakeBatches, dropped: DropBatches) -> None:
    """Hand ``app``'s fetched records of ``input_topics`` to ``take``, a batch per partition; call before it starts."""
    inputs = frozenset(input_topics)
    consumer = app.consumer
    if faust.__version__ != WRITTEN_FOR or type(consumer)._getmany is not ThreadDelegateConsumer._getmany:
        raise FaustVersionError(
            f"faust-streaming {faust.__version__}: the batch path (stream/live/faust_batches.py) was written for "
            f"faust-streaming {WRITTEN_FOR}'s ThreadDelegateConsumer._getmany"
        )
    for name in sorted(inputs):
        app.topics.add(app.topic(name, acks=False, value_serializer="raw", key_serializer="raw"))
    fetch = consumer._getmany

    async def getmany(active_partitions: Any, timeout: float) -> Any:
        generation = app.consumer_generation_id
        records = await fetch(active_partitions, timeout)
        if not records or not any(tp.topic in inputs for tp in records):
            return records
        batches = {tp: batch for tp, batch in records.items() if tp.topic in inputs and batch}
        rest = {tp: batch for tp, batch in records.items() if tp.topic not in inputs}
        if consumer.flow_active and app.consumer_generation_id == generation and not consumer.should_stop:
            await take(batches)
        else:
            dropped(batches)
        return rest

    consumer._getmany = getmany
