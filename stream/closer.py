"""Closing slots by stream time, re-judging late ones, and publishing verdicts (DESIGN.md invariant 3).

One closer runs at a time (the Faust leader's timer, holding a Redis lease).
Each tick it:

1. computes the job's watermark (:mod:`stream.watermark`);
2. closes every open slot whose end plus the grace period the watermark has
   passed, and re-judges closed slots that late events or exemptions touched,
   committing each verdict with :meth:`Store.commit_verdict`, which refuses a
   verdict computed from counts that have since moved (it is judged again on
   the next tick) and queues it in the outbox;
3. publishes the outbox to the slot-verdicts topic, removing entries only
   once Kafka has acknowledged them;
4. recomputes the month ledger of every app whose verdicts changed;
5. releases the duplicate-detection id sets of slots closed long enough ago.

A verdict is emitted once per revision, and any change to a closed slot's
verdict or counts (a late event, an exemption) makes the next revision, so
the latest record per key always carries the slot's current counts. Each
message carries the live state's ``generation``: after ``sla-stream rebuild``
revisions start again at 1 under a larger generation. If the closer dies after Kafka
acknowledged a message but before the outbox entry was removed, the same
message (same key, same revision) is sent again: the topic is compacted and
keyed by ``app:slot``, so readers see one verdict per revision.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from stream.config import Settings
from stream.ledger import assess_live_month, current_exemptions
from stream.report import to_json
from stream.sla.exemptions import Exemption, exemption_for
from stream.sla.slots import SLOT_MS, local_date, local_time
from stream.sla.verdict import SlotCounts, judge_slot
from stream.store import Fence, Store, StoredVerdict
from stream.watermark import job_watermark

log = logging.getLogger(__name__)

SendVerdicts = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]
"""Sends ``(key, value)`` records to the verdicts topic; returns once Kafka has acknowledged them all."""


@dataclass(frozen=True)
class CloserTiming:
    """How the closer reads time; all in milliseconds."""

    grace_ms: int
    idle_fresh_ms: int = 5_000
    idle_lag_ms: int = 10_000
    dedup_hold_ms: int = 3_600_000
    batch: int = 5_000

    @classmethod
    def of(cls, settings: Settings) -> CloserTiming:
        """The timing the settings give (``[stream]``)."""
        return cls(grace_ms=settings.grace_ms, idle_lag_ms=settings.idle_lag_ms, dedup_hold_ms=settings.dedup_hold_ms)


@dataclass
class TickResult:
    """What one tick did, for logs, metrics and tests."""

    watermark_ms: int | None = None
    closed: int = 0
    revised: int = 0
    published: int = 0
    retried: int = 0
    months: set[tuple[str, str]] = field(default_factory=set)
    """``(YYYY-MM, app)`` of the month ledgers recomputed."""


def judge(
    app_id: str, slot_ms: int, counts: SlotCounts, exemptions: Sequence[Exemption], settings: Settings
) -> StoredVerdict:
    """The verdict a slot deserves now (revision left at 0: the store assigns it)."""
    verdict = judge_slot(counts, settings.policy)
    covering = exemption_for(app_id, slot_ms, exemptions) if verdict.unavailable else None
    return StoredVerdict(
        revision=0,
        counts=counts,
        unavailable=verdict.unavailable,
        exempt=covering is not None,
        data_quality=verdict.data_quality_issue,
        clause=covering.clause if covering else "",
    )


def verdict_message(
    app_id: str, slot_ms: int, revision: int, verdict: StoredVerdict, settings: Settings, generation: int
) -> tuple[str, str]:
    """The record for the slot-verdicts topic: key ``app:slot_start_ms``, JSON value."""
    rate = judge_slot(verdict.counts, settings.policy).success_rate
    value = {
        "app_id": app_id,
        "slot_start": local_time(slot_ms, settings.policy.timezone).isoformat(),
        "slot_start_ms": slot_ms,
        "generation": generation,
        "revision": revision,
        "requests": verdict.counts.requests,
        "successes": verdict.counts.successes,
        "success_rate": None if rate is None else float(rate),
        "unavailable": verdict.unavailable,
        "exempt": verdict.exempt,
        "clause": verdict.clause or None,
        "data_quality": verdict.data_quality,
    }
    return f"{app_id}:{slot_ms}", json.dumps(value, separators=(",", ":"))


def _same(a: StoredVerdict, b: StoredVerdict) -> bool:
    """Whether a new revision would say nothing new: same verdict and same counts."""
    return (a.counts, a.unavailable, a.exempt, a.data_quality, a.clause) == (
        b.counts,
        b.unavailable,
        b.exempt,
        b.data_quality,
        b.clause,
    )


class Closer:
    """Closes slots in ``store`` for the input partitions ``input_tps``."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        input_tps: Sequence[str],
        send_verdicts: SendVerdicts,
        timing: CloserTiming | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._input_tps = list(input_tps)
        self._send = send_verdicts
        self._timing = timing or CloserTiming.of(settings)
        self._clock = clock

    async def tick(self, fence: Fence) -> TickResult:
        """One round of closing, re-judging, publishing and ledgers, writing to ``fence``'s namespace.

        Raises :class:`stream.store.Fenced` when the namespace stopped being
        ``fence``'s (state lost, rebuild): nothing was committed past that.
        """
        result = TickResult()
        timing = self._timing
        now_ms = int(self._clock() * 1000)
        states = await self._store.partition_states(self._input_tps)
        watermark = job_watermark(states, now_ms, timing.idle_fresh_ms, timing.idle_lag_ms)
        result.watermark_ms = watermark
        exemptions = await current_exemptions(self._store, self._settings)
        hold_from = watermark if watermark is not None else now_ms
        if watermark is not None:
            # A slot closes when slot end + grace <= watermark.
            due = await self._store.slots_to_close(watermark - timing.grace_ms - SLOT_MS + 1, timing.batch)
            await self._judge(fence, due, exemptions, hold_from, result)
        await self._judge(fence, await self._store.dirty_slots(timing.batch), exemptions, hold_from, result)
        result.published = await self.publish()
        result.months = await self._refresh_months(exemptions)
        if watermark is not None:
            await self._store.release_ids(watermark - timing.dedup_hold_ms)
        return result

    async def _judge(
        self,
        fence: Fence,
        slots: list[tuple[str, int]],
        exemptions: Sequence[Exemption],
        hold_from: int,
        result: TickResult,
    ) -> None:
        if not slots:
            return
        counts = await self._store.slot_counts(slots)
        stored = await self._store.verdicts(slots)
        tz = self._settings.policy.timezone
        for (app_id, slot_ms), slot_counts, previous in zip(slots, counts, stored, strict=True):
            verdict = judge(app_id, slot_ms, slot_counts, exemptions, self._settings)
            revision = previous.revision if previous else 0
            changed = previous is None or not _same(previous, verdict)
            message = (
                verdict_message(app_id, slot_ms, revision + 1, verdict, self._settings, fence.generation)
                if changed
                else None
            )
            month = local_date(slot_ms, tz).strftime("%Y-%m")
            committed = await self._store.commit_verdict(
                fence, app_id, slot_ms, hold_from, month, revision, verdict if changed else None, slot_counts, message
            )
            if committed is None:
                result.retried += 1
            elif previous is None:
                result.closed += 1
            elif changed:
                result.revised += 1

    async def publish(self) -> int:
        """Send the outbox to the verdicts topic; entries leave the outbox only once acknowledged."""
        sent = 0
        while True:
            messages = await self._store.outbox(self._timing.batch)
            if not messages:
                return sent
            await self._send(messages)
            await self._store.outbox_done(len(messages))
            sent += len(messages)

    async def _refresh_months(self, exemptions: Sequence[Exemption]) -> set[tuple[str, str]]:
        """Recompute every month ledger a judged slot marked due; unmark each only once it is saved."""
        tz = self._settings.policy.timezone
        due = await self._store.ledgers_due()
        for month, app_id in due:
            year, number = map(int, month.split("-"))
            for assessment in await assess_live_month(self._store, self._settings, app_id, year, number, exemptions):
                await self._store.save_month(app_id, assessment.month.first_day.isoformat(), to_json(assessment, tz))
            await self._store.ledger_done(month, app_id)
        return set(due)
