"""A leaner per-record path through faust-streaming's consumer, pinned to the version it was written for.

Why: ``Consumer._drain_messages`` (faust-streaming 0.15.3) hands every record
to the streams with ``await self.wait_first(callback(message),
self.suspend_flow.wait())``, so that a rebalance can interrupt a callback
that is blocked on a full stream buffer. ``wait_first`` wraps each of its
awaitables, plus the service's stopped and crashed events, in tasks and runs
``asyncio.wait`` on them: four tasks per record, most of Faust's ~75 µs a
record (docs/design.md, "Faust").

What: while flow is not suspended, the callback is awaited directly and the
unneeded ``suspend_flow.wait()`` coroutine is closed unstarted. When flow is
suspended (a rebalance), or for any other use of ``wait_first``, Faust's own
method runs unchanged.

Why it is safe here: the callback only blocks while the stream buffer is
full, and the ingest agents drain it continuously. Should a rebalance begin
while a callback waits, that record can reach this worker's agent after its
partition moved; counting it is still exact, because Redis skips records at
or below a partition's applied offset (:mod:`stream.live.store`, invariant 1).

The patch is applied only to the Faust version named below; with any other
version the worker runs on Faust's own path and says so in its log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.transport.consumer import Consumer
from mode.services import WaitResults

log = logging.getLogger(__name__)

PATCHED_FOR = "0.15.3"
_original_wait_first = Consumer.wait_first


async def _wait_first(self: Consumer, *coros: Any, timeout: Any = None) -> WaitResults:
    if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set() and asyncio.iscoroutine(coros[0]):
        callback, suspended = coros
        if asyncio.iscoroutine(suspended):
            suspended.close()
        result = await callback
        return WaitResults([callback], [result], False)
    return await _original_wait_first(self, *coros, timeout=timeout)


def install() -> bool:
    """Use the lean path if this is the Faust version it was written for; say whether it is in use."""
    if faust.__version__ != PATCHED_FOR:
        log.warning("faust-streaming %s is not %s: per-record fast path not applied", faust.__version__, PATCHED_FOR)
        return False
    Consumer.wait_first = _wait_first  # type: ignore[method-assign]
    return True
