"""Closing slots by stream time, re-judging late ones, and publishing verdicts (docs/design.md, verdicts and revisions).

One closer runs at a time: the Faust leader's timer (:class:`ClosingLeader`),
holding a Redis lease renewed while a tick runs. Each round of a tick it:

1. computes the job's watermark (:mod:`stream.live.clock`);
2. closes every open slot that is due (its end plus the grace period at or
   before the watermark), and re-judges closed slots that late events or
   exemptions touched. Each slot is judged by :func:`stream.sla.judge.judge`,
   and a batch of verdicts is committed in one Redis step
   (:meth:`Store.commit_verdicts`), which refuses the verdict of a slot whose
   counts moved since they were read (it is judged again on the next tick)
   and queues the others' messages in the outbox;
3. publishes the outbox to the slot-verdicts topic as step 2 fills it,
   removing entries only once Kafka has acknowledged them;
4. releases the duplicate-detection id sets of slots closed long enough ago;

and goes on to another round while one met its limit (a slot boundary of a
fleet), then recomputes the month ledger of every app whose verdicts changed,
once however many rounds touched it. Batches of slots and of ledgers are
several in flight (:func:`in_flight`), so Redis and Python work at once.

A verdict is emitted once per revision, and any change to a closed slot's
verdict or counts (a late event, an exemption) makes the next revision, so
the latest record per key always carries the slot's current counts. Each
message carries the live state's ``generation``: after ``sla-stream rebuild``
revisions start again at 1 under a larger generation. If the closer dies
after Kafka acknowledged a message but before the outbox entry was removed,
the same message (same key, same revision) is sent again: the topic is
compacted and keyed by ``app:slot``, so readers see one verdict per revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from stream.config import Settings
from stream.formats import month_to_json, verdict_message
from stream.live.clock import ClockTiming
from stream.live.exemptions import current_exemptions
from stream.live.health import Health
from stream.live.ledger import assess_live_months
from stream.live.namespace import NamespaceGuard
from stream.live.store import (
    COMMIT_BATCH,
    Fence,
    Fenced,
    LedgerDue,
    RolledBack,
    Store,
    StoredVerdict,
    VerdictCommit,
)
from stream.sla.exemptions import Exemption
from stream.sla.judge import judge
from stream.sla.slots import local_date
from stream.sla.verdict import SlotCounts

log = logging.getLogger(__name__)

SendVerdicts = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]
"""Sends ``(key, value)`` records to the verdicts topic; returns once Kafka has acknowledged them all."""

LEDGER_CHUNK = 500
"""Month ledgers recomputed per round of reads and saves."""

IN_FLIGHT = 6
"""Chunks of slots or ledgers worked on at once (:func:`in_flight`): six closed 7% more slots a second than three
at a boundary of 10,000 apps (`make bench-scale`), keeping Redis and Python busy at once more of the time."""

T = TypeVar("T")
Item = TypeVar("Item")

TICK_BUDGET_S = 30.0
"""How long a leader's tick goes on closing while rounds meet their limits (a catch-up of many slot boundaries)
without waiting for the next timer between rounds; then it recomputes the month ledgers the rounds touched, and
the timer's next tick goes on. A slot boundary of 10,000 apps takes about 2 s; the budget bounds how long month
figures lag behind closed slots in a catch-up, and each tick's ledgers (about 2 s at 10,000 apps) are paid once
per budget, not once per boundary."""

LEASE_S = 5.0
"""The closer's Redis lease, renewed while a tick runs: a killed leader's lease lapses within this."""


@dataclass(frozen=True)
class CloserLimits:
    """How much one tick takes on."""

    slots: int = 5_000
    """Slots read per query (due, dirty, id sets to release) and outbox messages sent per batch."""
    dedup_hold_ms: int = 3_600_000
    """How long (stream time) a judged slot keeps its event ids for duplicate detection."""

    @classmethod
    def of(cls, settings: Settings) -> CloserLimits:
        return cls(dedup_hold_ms=settings.dedup_hold_ms)


@dataclass
class TickResult:
    """What one tick did, for logs, metrics and tests."""

    watermark_ms: int | None = None
    closed: int = 0
    revised: int = 0
    published: int = 0
    retried: int = 0
    months: list[LedgerDue] = field(default_factory=list)
    """The month ledgers recomputed."""
    more: bool = False
    """A query met its limit: more slots may be due or dirty now (the leader goes on at once)."""

    def then(self, later: TickResult) -> TickResult:
        """This round and a ``later`` one of the same tick, as one result."""
        return TickResult(
            later.watermark_ms,
            self.closed + later.closed,
            self.revised + later.revised,
            self.published + later.published,
            self.retried + later.retried,
            self.months + later.months,
            later.more,
        )


class Closer:
    """Closes slots in ``store`` for the input partitions ``input_tps``.

    ``clock`` gives wall-clock seconds (injectable for tests); it only matters
    for idle partitions, whose stream time follows the wall clock.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        input_tps: Sequence[str],
        send_verdicts: SendVerdicts,
        timing: ClockTiming | None = None,
        limits: CloserLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._input_tps = list(input_tps)
        self._send = send_verdicts
        self._timing = timing or ClockTiming.of(settings)
        self._limits = limits or CloserLimits.of(settings)
        self._clock = clock

    async def tick(self, fence: Fence, ledgers: bool = True) -> TickResult:
        """One round of closing, re-judging, publishing and ledgers, writing to ``fence``'s namespace.

        Without ``ledgers``, the month ledgers the round marked due wait for a
        later tick (or :meth:`refresh_ledgers`): a catch-up closing many
        rounds of slots recomputes each app's ledger once, after the last round,
        not once a round.

        Raises :class:`stream.live.store.Fenced` when the namespace stopped
        being ``fence``'s (state lost, rebuild): nothing was committed past that.
        """
        result = TickResult()
        store, limit = self._store, self._limits.slots
        now_ms = int(self._clock() * 1000)
        watermark = self._timing.watermark(await store.partition_states(self._input_tps), now_ms)
        result.watermark_ms = watermark
        exemptions = await current_exemptions(store, self._settings)
        hold_from = watermark if watermark is not None else now_ms
        due = [] if watermark is None else await store.slots_to_close(self._timing.due_before(watermark), limit)
        dirty = await store.dirty_slots(limit)
        result.published = await self._judge_publishing(fence, (due, dirty), exemptions, hold_from, result)
        result.more = self._met_limit(due) or self._met_limit(dirty)
        if ledgers:
            result.months = await self._refresh_months(exemptions)
        if watermark is not None:
            await store.release_ids(watermark - self._limits.dedup_hold_ms, limit)
        return result

    def _met_limit(self, slots: Sequence[tuple[str, int]]) -> bool:
        """Whether some shard gave as many slots as a query takes (the store's queries take ``limit`` a shard)."""
        per_shard = Counter(self._store.shard_of(app_id).index for app_id, _ in slots)
        return any(count >= self._limits.slots for count in per_shard.values())

    async def _judge_publishing(
        self,
        fence: Fence,
        slot_lists: Sequence[list[tuple[str, int]]],
        exemptions: Sequence[Exemption],
        hold_from: int,
        result: TickResult,
    ) -> int:
        """Judge each of ``slot_lists`` in turn while publishing the outbox as it fills; the messages sent.

        Why at once: waiting for Kafka's acknowledgements took a quarter of a
        round at a fleet's slot boundary when it came after the judging.
        Publishing drains every outbox once more after the last commit, so
        nothing committed in this round waits for the next.
        """
        committed = asyncio.Event()
        judged = False

        async def judging() -> None:
            nonlocal judged
            for slots in slot_lists:
                await self._judge(fence, slots, exemptions, hold_from, result, committed)
            judged = True
            committed.set()

        async def publishing() -> int:
            sent = 0
            while True:
                committed.clear()
                last = judged  # read before draining: a commit after it sets ``committed`` again
                sent += await self.publish()
                if last:
                    return sent
                await committed.wait()

        _, sent = await together(judging(), publishing())
        return sent

    async def _judge(
        self,
        fence: Fence,
        slots: list[tuple[str, int]],
        exemptions: Sequence[Exemption],
        hold_from: int,
        result: TickResult,
        committed: asyncio.Event,
    ) -> None:
        """Judge ``slots`` and commit their verdicts in batches of :data:`COMMIT_BATCH`, one Redis step each,
        several batches in flight (:func:`in_flight`); ``committed`` is set after each commit."""

        async def judge_batch(batch: Sequence[tuple[str, int]]) -> None:
            states = await self._store.slot_states(batch)
            commits = self._commits(fence, batch, states, exemptions, hold_from)
            revisions = await self._store.commit_verdicts(fence, commits)
            committed.set()
            for commit, (_, previous), revision in zip(commits, states, revisions, strict=True):
                if revision is None:
                    result.retried += 1
                elif previous is None:
                    result.closed += 1
                elif commit.verdict is not None:
                    result.revised += 1

        await in_flight(self._shard_batches(slots, [app_id for app_id, _ in slots], COMMIT_BATCH), judge_batch)

    def _commits(
        self,
        fence: Fence,
        slots: Sequence[tuple[str, int]],
        states: Sequence[tuple[SlotCounts, StoredVerdict | None]],
        exemptions: Sequence[Exemption],
        hold_from: int,
    ) -> list[VerdictCommit]:
        """Each slot judged on the counts read, as a commit: a new verdict and its message only if it changed."""
        policy = self._settings.policy
        commits = []
        days: dict[int, date] = {}  # a batch holds few distinct slots (a boundary: one), each day computed once
        for (app_id, slot_ms), (slot_counts, previous) in zip(slots, states, strict=True):
            judged = judge(app_id, slot_ms, slot_counts, exemptions, policy)
            verdict = StoredVerdict.of(judged)
            revision = previous.revision if previous else 0
            changed = previous is None or not previous.says_the_same(verdict)
            message = (
                verdict_message(app_id, judged, revision + 1, fence.generation, policy.timezone) if changed else None
            )
            day = days.get(slot_ms) or days.setdefault(slot_ms, local_date(slot_ms, policy.timezone))
            commits.append(
                VerdictCommit(
                    app_id=app_id,
                    slot_ms=slot_ms,
                    counts=slot_counts,
                    expected_revision=revision,
                    verdict=verdict if changed else None,
                    message=message,
                    ledger=LedgerDue(day.year, day.month, app_id),
                    hold_from_ms=hold_from,
                )
            )
        return commits

    async def publish(self) -> int:
        """Send each shard's outbox to the verdicts topic; entries leave an outbox only once acknowledged."""
        sent = 0
        for shard in range(len(self._store.shards)):
            while messages := await self._store.outbox(shard, self._limits.slots):
                await self._send(messages)
                await self._store.outbox_done(shard, len(messages))
                sent += len(messages)
        return sent

    async def refresh_ledgers(self) -> list[LedgerDue]:
        """Recompute every month ledger marked due (after ticks without ``ledgers``); those recomputed."""
        return await self._refresh_months(await current_exemptions(self._store, self._settings))

    async def _refresh_months(self, exemptions: Sequence[Exemption]) -> list[LedgerDue]:
        """Recompute every month ledger a judged slot marked due; unmark each only once it is saved.

        In chunks of :data:`LEDGER_CHUNK`, each read, saved and unmarked in a few round trips a shard,
        several chunks in flight (:func:`in_flight`).
        """
        tz = self._settings.policy.timezone

        async def refresh(chunk: Sequence[LedgerDue]) -> None:
            assessed = await assess_live_months(
                self._store, self._settings, [(d.app_id, d.year, d.month) for d in chunk], tuple(exemptions)
            )
            await self._store.save_months(
                [
                    (ledger.app_id, assessment.month.first_day, month_to_json(assessment, tz))
                    for ledger, assessments in zip(chunk, assessed, strict=True)
                    for assessment in assessments
                ]
            )
            await self._store.ledgers_done(chunk)

        due = await self._store.ledgers_due()
        await in_flight(self._shard_batches(due, [d.app_id for d in due], LEDGER_CHUNK), refresh)
        return due

    def _shard_batches(self, items: Sequence[Item], app_ids: Sequence[str], size: int) -> list[Sequence[Item]]:
        """``items`` (of the apps ``app_ids``) in batches of at most ``size`` of one shard each: a batch is then
        one Redis step, not one a shard."""
        by_shard: dict[int, list[Item]] = defaultdict(list)
        for item, app_id in zip(items, app_ids, strict=True):
            by_shard[self._store.shard_of(app_id).index].append(item)
        return [group[start : start + size] for group in by_shard.values() for start in range(0, len(group), size)]


async def together(*works: Awaitable[T]) -> list[T]:
    """Run ``works`` concurrently, their results in order; the first failure cancels the others and is raised
    as it is (not in an exception group: callers catch :class:`Fenced` as from one step)."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def in_flight(batches: Sequence[Sequence[Item]], work: Callable[[Sequence[Item]], Awaitable[None]]) -> None:
    """``work`` on each batch, :data:`IN_FLIGHT` batches at a time.

    Why: a batch is Python work (judging, assessing) between Redis steps; with
    several in flight, Redis runs one batch's step while Python works on
    another, so the two processes' cores are busy at once instead of in turn.
    """
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(batch: Sequence[Item]) -> None:
        async with gate:
            await work(batch)

    await together(*(one(batch) for batch in batches))


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


class ClosingLeader:
    """The leader's closer timer: one tick at a time, under a Redis lease against a rebalance overlap.

    A tick never raises (a Faust timer that raises stops the worker): a
    namespace that moved on is handed to the guard, a Redis fault to the
    health state, anything else is logged and the next tick tries again.
    """

    def __init__(self, closer: Closer, store: Store, guard: NamespaceGuard, health: Health) -> None:
        self._closer = closer
        self._store = store
        self._guard = guard
        self._health = health

    async def tick(self) -> TickResult | None:
        """One closer tick if the namespace is writable and the lease is free; what it did, or None."""
        fence = None
        try:
            fence = self._guard.fence or await self._guard.refresh()
            if fence is None:
                return None
            lease = self._store.closer_lease(LEASE_S)
            if not await lease.acquire(blocking=False):
                return None
            async with renewed(lease, LEASE_S / 3):
                started = time.monotonic()
                result = await self._closer.tick(fence, ledgers=False)
                while result.more and time.monotonic() - started < TICK_BUDGET_S:  # a slot boundary of a fleet
                    result = result.then(await self._closer.tick(fence, ledgers=False))
                result.months = await self._closer.refresh_ledgers()  # once, for every round of the tick
        except Fenced:
            self._guard.stale()
            return None
        except RolledBack:
            if fence is not None:
                await self._guard.lost_writes(fence)
            return None
        except (RedisError, OSError) as error:
            self._health.redis_failed(error)
            return None
        except Exception:
            log.exception("closer tick failed; retrying on the next tick")
            return None
        self._health.redis_answered()
        if result.closed or result.revised:
            log.info(
                "closed %d slots, revised %d, published %d (watermark %s)",
                result.closed,
                result.revised,
                result.published,
                result.watermark_ms,
            )
        return result
