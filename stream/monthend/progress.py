"""How far a long read has got: a progress bar on a terminal, a plain line every few seconds otherwise.

The work is measured in offsets (known in advance, so time left can be
estimated; ``unit`` names another measure, such as the bytes of files to
read), the speed in events (what a reader cares about). Logs and CI see
plain lines; a person at a terminal sees one bar redrawn in place.

Example (not a terminal):
    >>> import io
    >>> out = io.StringIO()
    >>> now = [0.0]
    >>> progress = progress_for("replay 2026-10", 1_000, out, clock=lambda: now[0])
    >>> now[0] = 10.0
    >>> progress.update(offsets=250, events=2_500)
    >>> progress.close()
    >>> print(out.getvalue().strip())
    replay 2026-10: 250 of 1,000 offsets (25%), 2,500 events, 250 events/s, about 30 s left
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

PLAIN_EVERY_S = 5.0


class ReadProgress(Protocol):
    def update(self, offsets: int, events: int) -> None:
        """``offsets`` (or the bar's other unit) read of the total so far, ``events`` among them."""
        ...

    def close(self) -> None:
        """The read ended (or failed): finish the display."""
        ...


def progress_for(
    label: str,
    total_offsets: int,
    stream: TextIO,
    clock: Callable[[], float] = time.monotonic,
    unit: str = "offsets",
) -> ReadProgress:
    """A bar when ``stream`` is a terminal, plain lines otherwise; ``unit`` is what the total counts."""
    if stream.isatty():
        return TerminalProgress(label, total_offsets, stream)
    return PlainProgress(label, total_offsets, stream, clock, unit)


class PlainProgress:
    """A line every :data:`PLAIN_EVERY_S` seconds, and one at the end."""

    def __init__(
        self, label: str, total: int, stream: TextIO, clock: Callable[[], float], unit: str = "offsets"
    ) -> None:
        self._label = label
        self._unit = unit
        self._total = total
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._said = self._started
        self._last: tuple[int, int] | None = None

    def update(self, offsets: int, events: int) -> None:
        self._last = (offsets, events)  # cleared once said
        if self._clock() - self._said >= PLAIN_EVERY_S:
            self._say()

    def close(self) -> None:
        if self._last is not None:  # not said yet
            self._say()

    def _say(self) -> None:
        assert self._last is not None
        offsets, events = self._last
        self._last = None
        self._said = now = self._clock()
        elapsed = max(now - self._started, 1e-9)
        share = offsets / self._total if self._total else 1.0
        left = elapsed * (1 - share) / share if share else None
        print(
            f"{self._label}: {offsets:,} of {self._total:,} {self._unit} ({share:.0%}), {events:,} events, "
            f"{events / elapsed:,.0f} events/s" + ("" if left is None else f", about {left:,.0f} s left"),
            file=self._stream,
            flush=True,
        )


class TerminalProgress:
    """One bar redrawn in place (rich), cleared at the end: the summary line replaces it."""

    def __init__(self, label: str, total: int, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,.0f} events/s"),
            TextColumn("time left"),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self._task = self._progress.add_task(label, total=total or 1, events=0, rate=0.0)
        self._started = time.monotonic()
        self._progress.start()

    def update(self, offsets: int, events: int) -> None:
        rate = events / max(time.monotonic() - self._started, 1e-9)
        self._progress.update(self._task, completed=offsets, events=events, rate=rate)

    def close(self) -> None:
        self._progress.stop()
