"""Stream time of the whole job: how far event time has certainly progressed (DESIGN.md invariant 2).

Each input partition's stream time is the largest event time applied from it.
The job's watermark is the smallest of them, so a partition that lags behind
(a backlog, a worker that died and has not been replaced) holds every slot
open until it catches up: a backlog never closes slots early.

A partition that is caught up and has been quiet would hold the watermark
forever, so a quiet app's slots would never close. Such a partition lets
wall-clock time move its stream time on: to ``now - idle_lag``, the oldest
time an event produced now could still carry. The worker that owns the
partition reports it idle; the report is trusted only while fresh.

Example:
    >>> from stream.store import PartitionState
    >>> busy = PartitionState(offset=10, stream_ms=1_000, idle_seen_ms=None)
    >>> quiet = PartitionState(offset=None, stream_ms=None, idle_seen_ms=99_000)
    >>> job_watermark({"r:0": busy, "r:1": quiet}, now_ms=100_000, idle_fresh_ms=5_000, idle_lag_ms=10_000)
    1000
    >>> job_watermark({"r:1": quiet}, now_ms=100_000, idle_fresh_ms=5_000, idle_lag_ms=10_000)
    90000
"""

from __future__ import annotations

from collections.abc import Mapping

from stream.store import PartitionState


def partition_time(state: PartitionState, now_ms: int, idle_fresh_ms: int, idle_lag_ms: int) -> int | None:
    """A partition's stream time, moved on by the wall clock while it is reported idle; None if unknown."""
    event_time = state.stream_ms
    if state.idle_seen_ms is not None and now_ms - state.idle_seen_ms <= idle_fresh_ms:
        wall_time = now_ms - idle_lag_ms
        return wall_time if event_time is None else max(event_time, wall_time)
    return event_time


def job_watermark(
    states: Mapping[str, PartitionState], now_ms: int, idle_fresh_ms: int, idle_lag_ms: int
) -> int | None:
    """The smallest partition time; None while any partition's time is unknown (nothing may close)."""
    times = [partition_time(state, now_ms, idle_fresh_ms, idle_lag_ms) for state in states.values()]
    if not times or any(t is None for t in times):
        return None
    return min(t for t in times if t is not None)
