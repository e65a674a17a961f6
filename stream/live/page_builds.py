"""Month pages built in processes of their own, at the lowest CPU priority: page requests never slow counting.

A month page reads every slot of an app's month from Redis and renders a
page of 1 to 2 MB: about 0.3 s of CPU. Built on the worker's web threads,
a storm of such requests took the worker's interpreter from its counting
(a 420k-record backlog took 23.2 s to count instead of 12.6 s under 200
concurrent page requests). Here each page is built by one of
:data:`PAGE_BUILDS` processes started (spawned, not forked) at the first page
request, niced to 19: the operating system gives their CPU to the worker,
Kafka and Redis first. More requests wait up to :data:`BUSY_WAIT_S` for a
builder, then get ``503 busy``; a builder that dies is replaced.

Example (a build run in this process, as tests may):
    >>> builders = PageBuilders(in_process=True)
    >>> builders.run(len, "abc", busy=lambda: "busy")
    3
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

PAGE_BUILDS = 2
"""Pages built at once (each in its own process)."""
BUSY_WAIT_S = 10.0
"""How long a request waits for a free builder before ``503 busy``."""
BUILD_TIMEOUT_S = 60.0
"""A build taking longer than this is answered ``503`` (the builder finishes it and carries on)."""


def _lowest_priority() -> None:
    """A builder process's first act: let every other process on the machine have the CPU first."""
    os.nice(19)


class PageBuilders:
    """Runs builds in low-priority processes, :data:`PAGE_BUILDS` at a time (``in_process``: here, for tests)."""

    def __init__(self, in_process: bool = False) -> None:
        self._in_process = in_process
        self._slots = threading.BoundedSemaphore(PAGE_BUILDS)
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def run(self, build: Callable[[T], R], request: T, busy: Callable[[str], R]) -> R:
        """``build(request)`` in a builder (``build`` a module-level function, ``request`` picklable); ``busy(why)``
        when no builder is free within :data:`BUSY_WAIT_S`, a build times out, or its builder died."""
        if not self._slots.acquire(timeout=BUSY_WAIT_S):
            return busy("busy building other pages: try again in a few seconds")
        try:
            if self._in_process:
                return build(request)
            try:
                return self._builders().submit(build, request).result(timeout=BUILD_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                return busy(f"the page took longer than {BUILD_TIMEOUT_S:.0f} s to build: try again later")
            except BrokenProcessPool:
                self.close()  # the next build starts new builders
                return busy("the page's builder process died: try again")
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def _builders(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=PAGE_BUILDS,
                    mp_context=multiprocessing.get_context("spawn"),  # no fork of a process with loops and threads
                    initializer=_lowest_priority,
                )
            return self._pool
