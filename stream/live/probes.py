"""Whether a worker is alive and whether it is ready: the answers of ``/healthz`` and ``/readyz``.

For Kubernetes probes, systemd and load balancers (docs/deploy.md):

* **alive** (``/healthz``): the worker's event loop has run a timer within
  :data:`LIVENESS_S`. A loop stuck that long counts nothing and closes
  nothing; restarting the process is the cure (its partitions are read again
  from Redis's positions, so nothing is lost or counted twice).
* **ready** (``/readyz``): alive and counting. Not while Redis does not
  answer or refuses writes (``paused``), nor while the live state is lost
  (``refusing``: ``sla-stream rebuild`` is needed) or being rebuilt: a
  restart cures none of these, so they make the worker unready, not dead.

Example:
    >>> now = [0.0]
    >>> probes = Probes(lambda: "paused", clock=lambda: now[0])
    >>> probes.alive()
    (False, 'not alive: the event loop has not run yet')
    >>> probes.beat(); probes.alive()
    (True, 'alive')
    >>> probes.ready()
    (False, 'not ready: paused (Redis does not answer, or refuses writes): counting waits, nothing is skipped')
    >>> now[0] = 31.0; probes.alive()
    (False, 'not alive: the event loop last ran 31 s ago')
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stream.live.health import WorkerState

LIVENESS_S = 30.0
"""A loop that ran no timer for this long is stuck (the heartbeat timer runs every :data:`BEAT_S`)."""
BEAT_S = 1.0

_WHY_NOT_READY: dict[WorkerState, str] = {
    "counting": "",
    "paused": "Redis does not answer, or refuses writes): counting waits, nothing is skipped",
    "refusing": "the live state in Redis is lost): run `sla-stream rebuild`",
    "rebuilding": "`sla-stream rebuild` is recounting the live state): counting resumes when it ends",
}


class Probes:
    """The worker's liveness (its loop's heartbeat) and readiness (its state)."""

    def __init__(self, state: Callable[[], WorkerState], clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._clock = clock
        self._last_beat: float | None = None

    def beat(self) -> None:
        """Called by a timer on the worker's event loop every :data:`BEAT_S`."""
        self._last_beat = self._clock()

    def alive(self) -> tuple[bool, str]:
        if self._last_beat is None:
            return False, "not alive: the event loop has not run yet"
        quiet = self._clock() - self._last_beat
        if quiet >= LIVENESS_S:
            return False, f"not alive: the event loop last ran {quiet:.0f} s ago"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.alive()
        if not alive:
            return False, why.replace("not alive", "not ready", 1)
        state = self._state()
        if state != "counting":
            return False, f"not ready: {state} ({_WHY_NOT_READY[state]}"
        return True, "ready: counting"
