"""What state the worker is in, said once per change, and retrying Redis until it answers.

A worker never lets a Redis failure escape: Faust would stop the fetch loop
the batch path runs in, or restart the exemptions agent and commit past its
record (docs/design.md, "Faust"). Every
Redis step of the worker goes through :meth:`Health.until_redis_answers`,
which retries with a bounded backoff and reports the outage here. The log
gets one line when Redis goes and one when it returns, however many parts of
the worker were waiting, and the state is there for metrics to export.

States (:attr:`Health.state`):

``counting``
    the normal case;
``paused``
    Redis does not answer, or refuses writes (at ``maxmemory``): counting
    and closing wait, nothing is skipped. A refusal of writes ends only
    when writes succeed again, not when a read does, so the state does not
    flap while reads go on;
``refusing``
    Redis answers but the live state's marker is gone (Redis restarted
    empty): nothing is counted until ``sla-stream rebuild`` recounts it;
``rebuilding``
    a rebuild is recounting the state; the worker resumes when it ends.

Example:
    >>> times = iter([0.0, 31.5])
    >>> health = Health("redis://127.0.0.1:6379/0", clock=lambda: next(times))
    >>> health.redis_failed(ConnectionError("refused")); health.state
    'paused'
    >>> health.redis_answered(); health.state
    'counting'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, get_args

from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")
WorkerState = Literal["counting", "paused", "refusing", "rebuilding"]
STATES: tuple[WorkerState, ...] = get_args(WorkerState)
"""Every state a worker can be in, for the metrics' ``state`` label."""
NamespaceCondition = Literal["ok", "lost", "rebuilding"]
_STATE_OF_NAMESPACE: dict[NamespaceCondition, WorkerState] = {
    "ok": "counting",
    "lost": "refusing",
    "rebuilding": "rebuilding",
}


QUIET_S = 5.0
"""No refused write for this long ends an outage of refused writes (more than :class:`Backoff`'s cap of 2 s)."""


def refuses_writes(error: BaseException) -> bool:
    """Whether Redis answered but refused a write: at ``maxmemory`` (OOM), or a replica (read-only).

    Example:
        >>> from redis.exceptions import OutOfMemoryError, ResponseError
        >>> refuses_writes(OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
        True
        >>> refuses_writes(ResponseError("Error running script: OOM command not allowed when used memory > ..."))
        True
        >>> refuses_writes(ConnectionError("Connection refused"))
        False
    """
    return isinstance(error, OutOfMemoryError | ReadOnlyError) or "OOM command not allowed" in str(error)


class Backoff:
    """Waits that double from ``first_s`` up to ``cap_s``: quick to notice a return, gentle on a long outage."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 2.0) -> None:
        self._next = self._first = first_s
        self._cap = cap_s

    async def wait(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._cap)

    def reset(self) -> None:
        self._next = self._first


class Health:
    """The worker's state, from what its parts report; logs each change once."""

    def __init__(self, redis_where: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._where = redis_where
        self._clock = clock
        self._redis_down_since: float | None = None
        self._writes_refused = False
        self._last_failure = 0.0
        self._namespace: NamespaceCondition = "ok"

    @property
    def state(self) -> WorkerState:
        if self._redis_down_since is not None:
            return "paused"
        return _STATE_OF_NAMESPACE[self._namespace]

    def redis_failed(self, error: BaseException) -> None:
        self._last_failure = self._clock()
        if self._redis_down_since is not None:
            return
        self._redis_down_since = self._last_failure
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        self._writes_refused = refuses_writes(error)
        if self._writes_refused:
            log.warning(
                "Redis at %s refuses writes (%s): counting and closing paused until it accepts them, nothing is "
                "skipped; free memory or raise maxmemory",
                self._where,
                detail,
            )
        else:
            log.warning(
                "Redis at %s is unavailable (%s): counting and closing paused, nothing is skipped", self._where, detail
            )

    def redis_answered(self) -> None:
        """A step succeeded. An outage of refused writes ends only once no write was refused for :data:`QUIET_S`
        (a refused step retries within :class:`Backoff`'s cap, so it would have failed again): reads, and writes
        that happen to fit, go on succeeding meanwhile and must not end it."""
        if self._redis_down_since is None:
            return
        if self._writes_refused and self._clock() - self._last_failure < QUIET_S:
            return
        away = self._clock() - self._redis_down_since
        self._redis_down_since = None
        self._writes_refused = False
        log.warning("Redis at %s answers again after %.1f s: counting and closing resume", self._where, away)

    def namespace(self, condition: NamespaceCondition, detail: str = "") -> None:
        """Report the live state's marker: present (``ok``), gone (``lost``), or being rebuilt."""
        if condition == self._namespace:
            return
        self._namespace = condition
        if condition == "lost":
            log.error("%s", detail)
        elif condition == "rebuilding":
            log.warning("the live state is being rebuilt (sla-stream rebuild): counting waits until it is done")
        else:
            log.warning("the live state is in place%s: counting resumes", f" ({detail})" if detail else "")

    async def until_redis_answers(self, step: Callable[[], Awaitable[T]]) -> T:
        """``await step()``, retried with backoff for as long as Redis fails; cancellable (a stop is never held up)."""
        backoff = Backoff()
        while True:
            try:
                result = await step()
            except (RedisError, OSError) as error:
                self.redis_failed(error)
                await backoff.wait()
                continue
            self.redis_answered()
            return result


async def until_done(what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` until it returns: an unexpected error is logged (with its traceback, once) and retried.

    The batch path's and the agent's last line of defence: Faust commits past a record whose agent
    raised, so nothing may raise; a step that keeps failing holds its
    partition (loudly) rather than skipping it.
    """
    backoff = Backoff(cap_s=5.0)
    failures = 0
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            if failures == 1:
                log.exception("%s failed; retrying the same records until it succeeds", what)
            elif failures % 20 == 0:
                log.error("%s still failing after %d attempts; the partition waits", what, failures)
            await backoff.wait()
