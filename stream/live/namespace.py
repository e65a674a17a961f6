"""Which live state a worker writes to, and refusing to count into one that lost its past.

The live state in Redis carries a marker (``meta``, see :mod:`stream.live.store`)
written when it is initialised. Every counting and closing step is fenced by
the marker's generation, so when Redis restarts empty, or a rebuild begins,
the worker's next step changes nothing and the worker learns it at once.

* At start, a namespace without a marker is initialised only when nothing
  shows earlier progress (the consumer group's committed offsets, verdicts on
  the verdicts topic: the caller checks Kafka). Otherwise the worker refuses
  to count and says what to run: counting from zero would publish months
  short by everything counted before.
* While running, a refused step makes the worker wait here until the
  namespace is ``live`` again (``sla-stream rebuild`` recounted it), then
  take up its generation; the ingester reads its partitions again from
  Redis's positions.
"""

from __future__ import annotations

import asyncio
import logging
import time

from stream.live.health import Health
from stream.live.store import Fence, Store

log = logging.getLogger(__name__)

POLL_S = 1.0
"""How often a refusing or waiting worker looks at the marker again."""


def lost_message(store: Store, where: str, evidence: str) -> str:
    """The one line a refusing worker logs: what happened, and what to run."""
    return (
        f"the live state under key prefix {store.prefix!r} in Redis at {where} has no marker (Redis restarted "
        f"empty, or its keys were deleted) but {evidence}: refusing to count from zero. Run `sla-stream rebuild` "
        "(with this worker's --config) to recount it from the topics; workers resume by themselves when it is done"
    )


class NamespaceGuard:
    """The fence (generation) this worker writes with; waits while the namespace is lost or being rebuilt."""

    def __init__(self, store: Store, health: Health, where: str, poll_s: float = POLL_S) -> None:
        self._store = store
        self._health = health
        self._where = where
        self._poll_s = poll_s
        self._fence: Fence | None = None
        self._lost_evidence = "this worker had counted into it"
        self._opened = asyncio.Event()

    @property
    def fence(self) -> Fence | None:
        """The fence to write with, or None while the namespace is not writable."""
        return self._fence

    async def open(self, earlier_progress: str | None) -> None:
        """At start: take up the namespace's generation, or initialise it when nothing shows earlier progress.

        ``earlier_progress`` describes what Kafka shows of earlier counting
        (None: nothing), in words for the refusal line.
        """
        meta = await self._health.until_redis_answers(self._store.meta)
        if meta is None and earlier_progress is None:
            await self._health.until_redis_answers(lambda: self._store.initialise(int(time.time() * 1000)))
        elif meta is None:
            self._lost_evidence = earlier_progress
        await self.refresh()
        self._opened.set()

    async def refresh(self) -> Fence | None:
        """Read the marker again; the fence when the namespace is live, else None (and the health says why)."""
        meta = await self._health.until_redis_answers(self._store.meta)
        if meta is None:
            self._fence = None
            self._health.namespace("lost", lost_message(self._store, self._where, self._lost_evidence))
        elif meta.state != "live":
            self._fence = None
            self._health.namespace("rebuilding")
        else:
            self._fence = meta.fence
            self._health.namespace("ok", f"generation {meta.generation}")
        return self._fence

    async def lost_writes(self, fence: Fence) -> None:
        """Redis lost writes made under ``fence``: continue under a new generation (once, whoever notices first).

        Verdict revisions published before the loss are forgotten by Redis,
        so the same revision number could come again with other counts;
        a new generation keeps the verdicts topic unambiguous.
        """
        generation = int(time.time() * 1000)
        if await self._health.until_redis_answers(lambda: self._store.new_generation(fence, generation)):
            log.warning(
                "Redis lost writes (restored from an older state): the live state continues as generation %d, "
                "and partitions are read again from Redis's positions",
                generation,
            )
        self.stale()

    def stale(self) -> None:
        """A step was refused: the fence held is no longer the namespace's."""
        self._fence = None
        self._lost_evidence = "this worker had counted into it"

    async def writable(self) -> Fence:
        """The fence, waiting (polling the marker) for as long as the namespace is lost or being rebuilt."""
        await self._opened.wait()
        while True:
            fence = self._fence or await self.refresh()
            if fence is not None:
                return fence
            await asyncio.sleep(self._poll_s)
