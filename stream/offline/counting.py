"""Counting event files into slots in bounded memory: the offline report's counts, exactly, at any size.

Why: the report used to keep every event id of the month in one Python set
(:class:`stream.sla.counting.SlotTally`), some 190 bytes an event, 9.5 GB
for 50 million. Here the same counts come out of two passes whose memory
does not grow with the input:

1. **Read and place.** The files are cut into pieces (a gzip file is one
   piece, a plain one is cut at newlines), read in parallel processes. Each
   line is validated by the event contract (:func:`stream.events.parse_plain_lines`
   for a block of usual lines, :func:`stream.events.parse_file_line` for any
   other) and placed in the slot of its counted time
   (:func:`stream.sla.counting.counted_time`, :func:`stream.sla.slots.slot_start_ms`).
   An event whose slot is outside the month's window is counted as such and
   goes no further, before any duplicate check, as ``SlotTally.add`` does.
   The others are spilled to disk by partition (:mod:`stream.offline.spill`).
   Bad lines are kept on disk too, and reported in file and line order.
   Each valid event also marks the minute of its own time in the month's
   coverage (:class:`stream.sla.coverage.MinuteMap`), whatever its slot and
   whether or not it is a duplicate: what the files cover of the month.
2. **Count distinct.** Each partition's spilled lines are read into a set,
   one partition at a time in each process; its distinct lines per app, slot
   and kind are the counts, and the lines beyond them are the duplicates.

The number of partitions comes from the input's size and ``memory_budget``
(bytes of distinct events one process may hold), so the processes together
stay near ``processes × memory_budget`` plus their fixed size; a partition
that comes out larger than its share is split again while it is counted.
The spill lives in a temporary directory (``spill_dir``, else the system's,
``TMPDIR``), removed at the end, also after an error or Ctrl-C.

Example:
    >>> import tempfile
    >>> from zoneinfo import ZoneInfo
    >>> from stream.events import RequestEvent, SuccessEvent, TimeBounds, to_line
    >>> path = Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> events = [RequestEvent("r-1", "app", "7", "u", 1552183499900),
    ...           SuccessEvent("s-1", "r-1", "app", "7", "u", 1552183500300, 1552183499900),
    ...           RequestEvent("r-1", "app", "7", "u", 1552183499900)]  # delivered twice
    >>> _ = path.write_text("".join(to_line(e) + "\\n" for e in events) + "not json\\n")
    >>> counted = count_event_files([path], ZoneInfo("Asia/Shanghai"), (1551369600000, 1554048000000),
    ...                             TimeBounds(0, 2_000_000_000_000), print)  # doctest: +ELLIPSIS
    /.../events.jsonl:4: not valid JSON: Expecting value at column 1
    >>> counted.counts("app"), counted.duplicates, counted.bad_lines
    ({1552183200000: SlotCounts(requests=1, successes=1)}, 1, 1)
    >>> [(minute - 1551369600000) // MINUTE_MS for minute in counted.covered.minutes()]  # 10:04 and 10:05 on the 10th
    [13564, 13565]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO
from zoneinfo import ZoneInfo

from stream.events import InvalidEvent, RequestEvent, SuccessEvent, TimeBounds, parse_file_line, parse_plain_lines
from stream.offline import files
from stream.offline.files import Piece, estimated_size, pieces, read_blocks
from stream.offline.spill import (
    MAX_SPLIT_PARTS,
    PartitionCount,
    SpillWriter,
    count_partition,
    partition_files,
    partitions_for,
    read_group,
)
from stream.sla.counting import counted_time
from stream.sla.coverage import MINUTE_MS, MinuteMap
from stream.sla.slots import SLOT_MS, slot_start_ms
from stream.sla.verdict import SlotCounts

if TYPE_CHECKING:  # rich, for the progress bar, is the parent's business only
    from stream.monthend.progress import ReadProgress

DEFAULT_MEMORY_BUDGET = 64 << 20
"""Bytes of distinct events one process holds while counting a partition (its fixed size comes on top)."""

MEMORY_PER_INPUT_BYTE = 1.0
"""Memory a partition's set takes per byte of input lines, when every line is a distinct event in the month:
a usual line of some 200 bytes becomes a spilled line of some 60, held in a set at about 160 (counted with
:data:`stream.offline.spill.LINE_OVERHEAD_BYTES`); a quarter more, as partitions come out a little unequal."""

MAX_PARTITIONS = 512
"""Each reading process keeps a file open per partition; past this, partitions are split while counted instead."""

MAX_PROCESSES = 6
"""Processes at most, whatever the cores: each holds up to :data:`DEFAULT_MEMORY_BUDGET` of distinct events plus
some 45 MB of its own, so six and the command stay well under 1 GB."""

SMALL_INPUT_BYTES = 16 << 20
"""Below this much input, counting runs in this process: starting others would cost more than it saves."""

PIECE_BYTES = 64 << 20
MIN_PIECE_BYTES = 1 << 20
"""Plain files are cut into pieces of a quarter of each process's share of the input, within these bounds, so
the processes share a large file and finish together."""

PROGRESS_EVERY_S = 0.2
SHOW_AFTER_S = 1.0
"""Progress is shown for work that takes longer than this."""

BISECT_BELOW = 64
"""A block with a line the plain path does not take is halved until it is this small, then read line by line."""


class CountingProcessDied(Exception):
    """A process counting the files died: the counts would be short, so the report stops (one line)."""


@dataclass(frozen=True)
class BadLine:
    """A line of an event file that was skipped, and why."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class CountedEvents:
    """Distinct requests and successes per app and slot of the window, with what was not counted and why.

    The same figures :class:`stream.sla.counting.SlotTally` gives for the same lines.
    """

    slots: Mapping[str, Mapping[int, SlotCounts]]
    """Per app, its counts by slot start, sorted."""
    duplicates: int
    """Events in the window counted once although delivered more often: the further deliveries."""
    outside_window: int
    """Valid events whose slot is outside the window: not counted."""
    bad_lines: int
    """Lines skipped for breaking the event contract (each was given to ``on_bad_line``)."""
    covered: MinuteMap
    """The minutes of the window (its whole span) in which a valid event of any app happened, by the event's own
    ``ts`` (not its slot's time): counted, duplicate or whatever its slot. Bad lines mark nothing."""
    partitions: int = 0
    spilled_bytes: int = 0
    splits: int = 0
    """Partitions (or parts of them) that outgrew the memory budget and were split again: time lost, not memory."""

    def apps(self) -> set[str]:
        """Apps with an event in the window."""
        return set(self.slots)

    def counts(self, app_id: str) -> dict[int, SlotCounts]:
        """The app's counts per slot start, for the slots that saw any event, sorted."""
        return dict(self.slots.get(app_id, {}))


class ProgressFactory(Protocol):
    def __call__(self, label: str, total: int, unit: str) -> ReadProgress:
        """A progress display for work of ``total`` ``unit`` (e.g. bytes), as ``progress.progress_for`` gives."""
        ...


def count_event_files(
    paths: Sequence[Path],
    tz: ZoneInfo,
    window_ms: tuple[int, int],
    bounds: TimeBounds,
    on_bad_line: Callable[[BadLine], None],
    progress: ProgressFactory | None = None,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    processes: int | None = None,
    spill_dir: Path | None = None,
) -> CountedEvents:
    """Count the valid events of the files into slots of ``window_ms`` (slot starts ``[start, end)``).

    ``window_ms`` spans whole minutes (a calendar month, else ``ValueError``):
    its minutes with a valid event are :attr:`CountedEvents.covered`. Bad
    lines go to ``on_bad_line`` in file and line order, once the files are
    read. ``processes``: how many processes read and count (default: one per
    core, or only this one for a small input). Raises
    :class:`stream.offline.files.EventFilesError` for a damaged gzip file and
    ``OSError`` for a file that cannot be read or a disk that is full.
    """
    covered = MinuteMap(*window_ms)  # refuses a window of part minutes before anything is read
    work = [piece for path in paths for piece in pieces(path, _piece_bytes(paths, processes))]
    input_bytes = sum(piece.work for piece in work)
    if processes is None:
        processes = 1 if input_bytes < SMALL_INPUT_BYTES else min(MAX_PROCESSES, len(os.sched_getaffinity(0)))
    processes = max(1, min(processes, len(work)))
    needed = sum(estimated_size(path) for path in dict.fromkeys(paths)) * MEMORY_PER_INPUT_BYTE
    partitions = partitions_for(needed, memory_budget, _most_partitions())
    with _terminated_as_exit(), tempfile.TemporaryDirectory(prefix="sla-report-", dir=spill_dir) as folder:
        job = _Job(Path(folder), partitions, tz, window_ms, bounds, memory_budget, len(work), files.BLOCK_BYTES)
        with _Workers(job, processes) as workers:
            read = workers.run(
                _read_piece,
                list(enumerate(work)),
                _show(progress, f"reading {len(paths)} event files ({input_bytes:,} bytes uncompressed)", input_bytes),
                job.read_bytes,
                job.read_events,
                key=lambda task: task[1].work,
            )
            bad_lines = _report_bad_lines(job, work, read, on_bad_line)
            spilled = {p: sum(f.stat().st_size for f in partition_files(job.folder, p)) for p in range(partitions)}
            counted = workers.run(
                _count_partition,
                list(spilled.items()),
                _show(progress, f"counting distinct events in {partitions} partitions", sum(spilled.values())),
                job.count_bytes,
                job.count_lines,
                key=lambda task: task[1],
            )
    return _counted_events(read, counted, bad_lines, covered, partitions, sum(spilled.values()))


@dataclass
class _Job:
    """What every process of a count shares: where to spill, how to place, and the progress counters."""

    folder: Path
    partitions: int
    tz: ZoneInfo
    window_ms: tuple[int, int]
    bounds: TimeBounds
    memory_budget: int
    pieces: int
    block_bytes: int
    read_bytes: Any = field(init=False)
    read_events: Any = field(init=False)
    count_bytes: Any = field(init=False)
    count_lines: Any = field(init=False)

    def __post_init__(self) -> None:
        # Shared memory the processes write their progress to (one slot per piece or partition, no locks).
        self.read_bytes = RawArray("q", max(1, self.pieces))
        self.read_events = RawArray("q", max(1, self.pieces))
        self.count_bytes = RawArray("q", self.partitions)
        self.count_lines = RawArray("q", self.partitions)


@dataclass(frozen=True)
class _PieceRead:
    lines: int
    outside_window: int
    bad_lines: int
    covered: bytes
    """The piece's :class:`MinuteMap` of the window (``to_bytes``), its trailing zero bytes cut: a few kB at most."""


def _read_piece(job: _Job, task: tuple[int, Piece]) -> _PieceRead:
    return _Reader.of(job).read(*task)


def _count_partition(job: _Job, task: tuple[int, int]) -> PartitionCount:
    partition, _ = task
    shared = job.count_bytes

    def done(read: int) -> None:
        shared[partition] = max(shared[partition], read)

    counted = count_partition(partition_files(job.folder, partition), job.memory_budget, job.folder, done)
    job.count_lines[partition] = counted.lines
    return counted


class _Reader:
    """Reads pieces in one process, spilling to that process's files; one per process, kept between pieces."""

    _current: _Reader | None = None

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.spill = SpillWriter(job.folder, f"{os.getpid()}", job.partitions)
        self.bad: TextIO | None = None
        """The piece's bad lines, ``[number, reason]`` in JSON a line, written as they come: a file of nothing
        but bad lines costs disk, not memory."""
        self.bad_lines = 0
        self.outside = 0
        self.events = 0
        self.minutes: set[int] = set()
        """Minutes (``ts // MINUTE_MS``) of the valid events of the block being read: a set add an event in the hot
        loop, folded into :attr:`covered` once a minute at the block's end (memory: a block's events at most)."""
        self.covered = MinuteMap(*job.window_ms)

    @classmethod
    def of(cls, job: _Job) -> _Reader:
        if cls._current is None or cls._current.job is not job:
            cls._current = cls(job)
        return cls._current

    def read(self, index: int, piece: Piece) -> _PieceRead:
        self.bad_lines, self.outside, self.events = 0, 0, 0
        self.minutes.clear()
        self.covered = MinuteMap(*self.job.window_ms)
        progress_bytes, progress_events = self.job.read_bytes, self.job.read_events

        def done(read: int) -> None:  # bytes of the piece read, compressed ones for gzip: in bytes of lines
            progress_bytes[index] = read * piece.work // max(1, piece.size)
            progress_events[index] = self.events

        number = 0  # lines of the piece before the block
        with (self.job.folder / f"bad-{index}.jsonl").open("w", encoding="utf-8") as self.bad:
            for block in read_blocks(piece, done, self.job.block_bytes):
                lines = block.split(b"\n")
                last = lines.pop()  # empty, or the file's last line if it has no newline
                self._block(lines, number)
                number += len(lines)
                if last:
                    number += 1
                    self._one(last, number)
                self.spill.flush_if_full()
                self.covered.add_minutes(self.minutes)
                self.minutes.clear()
        self.spill.flush()
        return _PieceRead(number, self.outside, self.bad_lines, self.covered.to_bytes().rstrip(b"\0"))

    def _block(self, lines: list[bytes], before: int) -> None:
        """Lines ``before + 1`` onwards (without newlines): as one batch when the plain path takes them all."""
        usual = [line for line in lines if line] if b"" in lines else lines  # empty lines are skipped anyway
        parsed = parse_plain_lines(usual, self.job.bounds)
        if parsed is not None:
            self._place(*parsed)
        elif len(lines) > BISECT_BELOW:
            half = len(lines) // 2
            self._block(lines[:half], before)
            self._block(lines[half:], before + half)
        else:
            for offset, line in enumerate(lines, start=1):
                self._one(line + b"\n", before + offset)

    def _place(self, requests: list[RequestEvent], successes: list[SuccessEvent]) -> None:
        """Place events of the plain path: their ids hold no backslash, tab or newline, so need no escaping."""
        tz, (start, end) = self.job.tz, self.job.window_ms
        buffers, partitions = self.spill.buffers, self.spill.partitions
        note = self.minutes.add
        outside = 0
        for request in requests:
            note(request.ts // MINUTE_MS)
            slot = slot_start_ms(request.ts, tz)
            if start <= slot < end:
                buffers[slot // SLOT_MS % partitions].append(f"{request.app_id}\t{slot}\tr\t{request.event_id}\n")
            else:
                outside += 1
        for success in successes:
            note(success.ts // MINUTE_MS)  # its own time, not its request's
            slot = slot_start_ms(counted_time(success.ts, success.request_ts), tz)
            if start <= slot < end:
                buffers[slot // SLOT_MS % partitions].append(f"{success.app_id}\t{slot}\ts\t{success.event_id}\n")
            else:
                outside += 1
        self.outside += outside
        self.events += len(requests) + len(successes)

    def _one(self, raw: bytes, number: int) -> None:
        """One line as read (newline included), by the full rules when the plain path does not take it."""
        try:
            event = parse_file_line(raw, self.job.bounds)
        except InvalidEvent as error:
            assert self.bad is not None
            self.bad.write(json.dumps([number, str(error)]) + "\n")
            self.bad_lines += 1
            return
        if event is None:
            return
        self.events += 1
        self.minutes.add(event.ts // MINUTE_MS)
        slot = slot_start_ms(event.counted_ts, self.job.tz)
        if self.job.window_ms[0] <= slot < self.job.window_ms[1]:
            self.spill.add(event.app_id, slot, event.kind, event.event_id)
        else:
            self.outside += 1


class _Workers:
    """The processes a count runs in, or this process alone.

    The processes are started afresh (``spawn``), with nothing of the command
    but this package: some 20 MB each rather than a copy of the command's
    imports (faust, rich...), and no copy of a parent's threads or locks.
    """

    _job: _Job | None = None
    """The job, in a worker process."""

    def __init__(self, job: _Job, processes: int) -> None:
        self.job = job
        self.pool = None
        self.processes: set[multiprocessing.process.BaseProcess] = set()
        """The pool's processes: a pool never finishes a task whose process died, so they are watched."""
        if processes > 1:
            before = set(multiprocessing.active_children())
            with _without_main_module():
                context = multiprocessing.get_context("spawn")
                self.pool = context.Pool(processes, initializer=_Workers._start, initargs=(job,))
            self.processes = set(multiprocessing.active_children()) - before

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()  # on success too: each piece's spill was flushed when it was read
            self.pool.join()
        if _Reader._current is not None:  # this process read (alone)
            _Reader._current.spill.close()
            _Reader._current = None

    def _check_alive(self) -> None:
        """Raise :class:`CountingProcessDied` when a process of the pool has ended (killed, out of memory)."""
        for process in self.processes:
            if process.exitcode is not None:
                how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit status {process.exitcode}"
                raise CountingProcessDied(
                    f"a counting process of the report died ({how}; out of memory?): nothing was reported"
                )

    @staticmethod
    def _start(job: _Job) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
        _Workers._job = job

    def run(
        self,
        function: Callable[[_Job, Any], Any],
        tasks: list[Any],
        shown: ReadProgress | None,
        done: Any,
        events: Any,
        key: Callable[[Any], int],
    ) -> list[Any]:
        """``function(job, task)`` for every task, biggest first (by ``key``); the results in the tasks' order."""
        order = sorted(range(len(tasks)), key=lambda i: -key(tasks[i]))
        try:
            if self.pool is None:
                results = {}
                for i in order:
                    results[i] = function(self.job, tasks[i])
                    _update(shown, done, events)
            else:
                pending = self.pool.map_async(_call, [(function, i, tasks[i]) for i in order], chunksize=1)
                while not pending.ready():
                    pending.wait(PROGRESS_EVERY_S)
                    _update(shown, done, events)
                    self._check_alive()
                results = dict(pending.get())
            _update(shown, done, events)
        finally:
            if shown is not None:
                shown.close()
        return [results[i] for i in range(len(tasks))]


@contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (``timeout``, ``kill``, a service manager) ends the count as an exit does: the pool is stopped and
    the spill removed on the way out, as for Ctrl-C; the usual handling comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _without_main_module() -> Iterator[None]:
    """Processes spawned meanwhile do not import the command's main module (``sla-stream``, ``stream.cli``).

    ``multiprocessing`` has a spawned process import the parent's
    ``__main__`` first, which here would be the whole command line tool; the
    workers need only this module, which they import to unpickle their tasks.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _call(call: tuple[Callable[[_Job, Any], Any], int, Any]) -> tuple[int, Any]:
    function, index, task = call
    assert _Workers._job is not None
    return index, function(_Workers._job, task)


def _update(shown: ReadProgress | None, done: Any, events: Any) -> None:
    if shown is not None:
        shown.update(sum(done), sum(events))


def _show(progress: ProgressFactory | None, label: str, total: int) -> ReadProgress | None:
    return None if progress is None else _LateProgress(progress(label, total, "bytes"))


class _LateProgress:
    """Progress told to the display only once the work has taken :data:`SHOW_AFTER_S`.

    A small report prints what it always printed (a plain display says
    nothing it was not told; a bar on a terminal is cleared at the end), and
    a file found damaged at once gives its one line of error, nothing before.
    """

    def __init__(self, shown: ReadProgress, clock: Callable[[], float] = time.monotonic) -> None:
        self._shown = shown
        self._clock = clock
        self._started = clock()

    def update(self, offsets: int, events: int) -> None:
        if self._clock() - self._started >= SHOW_AFTER_S:
            self._shown.update(offsets, events)

    def close(self) -> None:
        self._shown.close()


def _piece_bytes(paths: Sequence[Path], processes: int | None) -> int:
    total = sum(path.stat().st_size for path in paths)
    return max(MIN_PIECE_BYTES, min(PIECE_BYTES, total // (4 * (processes or os.cpu_count() or 1)) + 1))


def _most_partitions() -> int:
    """At most :data:`MAX_PARTITIONS`, and as many as a process can hold files open for, with room to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = 64 + MAX_SPLIT_PARTS  # a split opens a file per part while the partition files are open
    return max(1, min(MAX_PARTITIONS, soft - spare if soft != resource.RLIM_INFINITY else MAX_PARTITIONS))


def _report_bad_lines(
    job: _Job, work: list[Piece], read: list[_PieceRead], on_bad_line: Callable[[BadLine], None]
) -> int:
    """Hand every bad line to ``on_bad_line`` in file and line order; how many."""
    count = 0
    before = 0  # lines of the file in its pieces before this one
    for index, (piece, result) in enumerate(zip(work, read, strict=True)):
        if piece.start == 0:
            before = 0
        if result.bad_lines:
            with (job.folder / f"bad-{index}.jsonl").open(encoding="utf-8") as bad:
                for line in bad:
                    number, reason = json.loads(line)
                    on_bad_line(BadLine(piece.path, before + number, reason))
                    count += 1
        before += result.lines
    return count


def _counted_events(
    read: list[_PieceRead],
    counted: list[PartitionCount],
    bad_lines: int,
    covered: MinuteMap,
    partitions: int,
    spilled: int,
) -> CountedEvents:
    """The counts of every partition and the coverage of every piece (OR-merged into ``covered``) together."""
    for piece in read:
        if piece.covered:
            covered.merge(MinuteMap(covered.start_ms, covered.end_ms, piece.covered))
    requests: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    successes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for partition in counted:
        for group, distinct in partition.groups.items():
            app_id, slot_ms, kind = read_group(group)
            (requests if kind == "request" else successes)[app_id][slot_ms] += distinct
    slots = {
        app_id: {
            slot_ms: SlotCounts(requests[app_id].get(slot_ms, 0), successes[app_id].get(slot_ms, 0))
            for slot_ms in sorted(requests[app_id].keys() | successes[app_id].keys())
        }
        for app_id in sorted(requests.keys() | successes.keys())
    }
    return CountedEvents(
        slots,
        duplicates=sum(p.lines - p.distinct for p in counted),
        outside_window=sum(r.outside_window for r in read),
        bad_lines=bad_lines,
        covered=covered,
        partitions=partitions,
        spilled_bytes=spilled,
        splits=sum(p.splits for p in counted),
    )
