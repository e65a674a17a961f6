"""One process's share of a replay: some of the input partitions, counted into the replay's namespace.

A replay splits the input partitions across processes (``--processes``,
one per core by default) so that parsing, the costly part, runs on every
core; Redis's offset fence makes their steps independent (each partition is
one process's alone). Each process reads its partitions with its own
consumer and counts them with the workers' Ingester; the parent runs the
closer and shows progress from the counters each process shares with it.

Example (partitions balanced by the offsets to read):
    >>> from aiokafka import TopicPartition as TP
    >>> plan = ReadPlan({TP("r", 0): 0, TP("r", 1): 0, TP("s", 0): 0}, {TP("r", 0): 90, TP("r", 1): 50, TP("s", 0): 45})
    >>> [sorted(f"{tp.topic}{tp.partition}" for tp in share.starts) for share in split(plan, 2)]
    [['r0'], ['r1', 's0']]
"""

from __future__ import annotations

import asyncio
import multiprocessing.queues
import signal
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.events import Event
from stream.formats import DeadLetter
from stream.kafka_security import aiokafka_options, redact
from stream.live.ingest import IngestStats
from stream.live.recount import (
    Every,
    ReadPlan,
    RecountError,
    ingest_handle,
    mark_read_partitions_idle,
    open_consumer,
    read_plan,
    recount_ingester,
    tp_name,
)
from stream.live.store import Fence, Store, redis_client

IDLE_EVERY_S = 1.0
"""How often a process reports its partitions read to the end as idle (a report is trusted for a few seconds)."""
POLL_S = 0.2
"""How often a replay's parent looks at its processes' progress and outcomes (part 0 of a split replay: at the
other parts') and runs the closer meanwhile, and a part looks whether the run's namespace is ready."""


@dataclass(frozen=True)
class Share:
    """What one process counts: its partitions' read plan, into which namespace, and which events."""

    settings: Settings
    prefix: str
    generation: int
    plan: ReadPlan
    month_ms: tuple[int, int]
    """Count events whose counted time is in ``[start, end)``."""
    apps: frozenset[str]
    """Count only these apps' events (empty: every app's)."""

    def admits(self, event: Event) -> bool:
        start_ms, end_ms = self.month_ms
        return start_ms <= event.counted_ts < end_ms and (not self.apps or event.app_id in self.apps)


def split(plan: ReadPlan, processes: int) -> list[ReadPlan]:
    """The plan's partitions in at most ``processes`` groups of about equal offsets (largest to the least loaded)."""
    groups: list[dict[TopicPartition, int]] = [{} for _ in range(max(1, processes))]
    loads = [0] * len(groups)
    by_size = sorted(plan.partitions, key=lambda tp: (-(plan.ends[tp] - plan.starts[tp]), tp.topic, tp.partition))
    for tp in by_size:
        least = loads.index(min(loads))
        groups[least][tp] = plan.starts[tp]
        loads[least] += max(0, plan.ends[tp] - plan.starts[tp])
    return [ReadPlan(group, {tp: plan.ends[tp] for tp in group}) for group in groups if group]


@dataclass(frozen=True)
class ShareOutcome:
    """What a process sends back: its totals, or the one line saying why it stopped."""

    index: int
    stats: IngestStats | None
    error: str | None = None


class SharedCount(Protocol):
    """A number one process writes and another reads: ``multiprocessing`` ``Value("q", lock=False)``."""

    value: int


def run_share(
    index: int,
    share: Share,
    offsets_done: SharedCount,
    events_counted: SharedCount,
    outcomes: multiprocessing.queues.Queue[ShareOutcome],
) -> None:
    """A replay process's entry point: count ``share``, updating the shared counters; put the outcome.

    Ctrl-C is the parent's to handle: it stops its processes and removes the namespace.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = share.settings
    try:
        stats = asyncio.run(_count_share(share, offsets_done, events_counted))
        outcomes.put(ShareOutcome(index, stats))
    except KafkaError as error:
        message = f"Kafka at {settings.kafka_bootstrap} failed during the replay: {error}"
        outcomes.put(ShareOutcome(index, None, redact(message)))
    except RedisError as error:
        outcomes.put(
            ShareOutcome(index, None, redact(f"Redis at {settings.redis_url} failed during the replay: {error}"))
        )
    except RecountError as error:
        outcomes.put(ShareOutcome(index, None, str(error)))
    except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001 - a bug still ends the replay with one line
        outcomes.put(ShareOutcome(index, None, redact(f"a replay process failed: {type(error).__name__}: {error}")))


async def _count_share(share: Share, offsets_done: SharedCount, events_counted: SharedCount) -> IngestStats:
    """Count the share's partitions into the replay's namespace, reporting progress and idle partitions."""
    settings = share.settings
    plan = share.plan

    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    try:
        store = Store.of(redis, settings, share.prefix)
        fence = Fence(share.generation, "rebuilding")

        async def not_sent(letter: DeadLetter) -> None:
            """Dead letters were sent when the workers met the records; a replay only counts them."""

        input_tps = [tp_name(tp) for tp in plan.partitions]
        ingester = recount_ingester(settings, store, fence, input_tps, not_sent, "replay", share.admits)
        consumer = await open_consumer(settings, aiokafka_options(settings.kafka_security))
        try:
            idle_reports = Every(IDLE_EVERY_S)

            async def between(done: int) -> None:
                offsets_done.value = done
                events_counted.value = ingester.stats.counted
                if idle_reports.due():
                    await mark_read_partitions_idle(store, plan, consumer)

            await read_plan(consumer, plan, ingest_handle(ingester, settings.topics.input_kinds), between)
        finally:
            await consumer.stop()
        return ingester.stats
    finally:
        await redis.aclose()


def merged(all_stats: Sequence[IngestStats]) -> IngestStats:
    """The totals of several processes' ingest."""
    total = IngestStats()
    for stats in all_stats:
        for item in fields(IngestStats):
            setattr(total, item.name, getattr(total, item.name) + getattr(stats, item.name))
    return total
