"""Placed events spilled to disk by partition, and one partition's distinct events counted at a time.

Why: an exact count of distinct events needs every id of a slot at once, but
never two slots at once. So each event, once validated and placed in its
slot, is written as one line to the file of its partition, and the
partitions are then counted one after the other, each with a set of its own
lines: memory holds one partition's distinct events, and the partitions are
sized from the input so that one fits the budget.

A spilled event is one line, ``APP \\t SLOT \\t KIND \\t ID`` (``SLOT`` the
slot's start in epoch ms, ``KIND`` ``r`` or ``s``): two deliveries of an
event give the same line, two events give different lines, so the distinct
lines are the distinct events, ids kept whole (no digest stands in for an id).
An id or app may hold any character; a backslash, tab or newline in it is
escaped (:func:`escape`), which keeps lines apart and changes nothing in the
usual id (the plain path only takes ids without them).

The partition of an event is its slot's number modulo the number of
partitions, so a slot's lines meet in one partition and the partitions'
counts never overlap. The number is kept coprime with 288 (slots a day), so
each partition gets slots from every time of day and the partitions come out
about equal. A partition whose distinct lines outgrow the budget anyway (all
traffic in a few slots) is split again, by a hash of the whole line, and its
parts counted one at a time: memory stays bounded whatever the input.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> writer = SpillWriter(folder, "w1", partitions=5)
    >>> for event_id in ("r-1", "r-2", "r-1"):
    ...     writer.add("app", 1552183200000, "request", event_id)
    >>> writer.close()
    >>> counted = count_partition(partition_files(folder, partition_of(1552183200000, 5)), 1 << 20, folder)
    >>> counted.lines, counted.distinct, {read_group(g): n for g, n in counted.groups.items()}
    (3, 2, {('app', 1552183200000, 'request'): 2})
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stream.offline.files import Piece, read_blocks
from stream.sla.counting import EventKind
from stream.sla.slots import SLOT_MS, SLOTS_PER_DAY

KIND_CODES: dict[EventKind, str] = {"request": "r", "success": "s"}
_KINDS: dict[str, EventKind] = {code: kind for kind, code in KIND_CODES.items()}

LINE_OVERHEAD_BYTES = 96
"""Memory a distinct line takes beyond its length, in a partition's set: the bytes object's header (33) and its
share of the set's table (16 bytes a slot, the table a third to two thirds full), with room for the rest."""

MAX_SPLIT_DEPTH = 8
"""How often a partition is split again at most: each split divides it by a fresh hash, so more is never needed."""

MAX_SPLIT_PARTS = 256
"""Parts a split makes at most (a file open for each): a part still too large is split again."""

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})
_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n"}


def escape(text: str) -> str:
    r"""``text`` with its backslashes, tabs and newlines escaped: one way to write it, never ambiguous.

    Example:
        >>> escape("r-1"), escape("a\tb"), escape("a\\tb")
        ('r-1', 'a\\tb', 'a\\\\tb')
    """
    return text.translate(_ESCAPES)


def unescape(text: str) -> str:
    r"""The text :func:`escape` was given.

    Example:
        >>> unescape(escape("a\\t\tb\n")) == "a\\t\tb\n"
        True
    """
    return _UNESCAPE.sub(lambda match: _UNESCAPED[match[1]], text)


def spill_line(app_id: str, slot_ms: int, kind: EventKind, event_id: str) -> str:
    """The line an event is spilled as (with its newline), for any app and id."""
    return f"{escape(app_id)}\t{slot_ms}\t{KIND_CODES[kind]}\t{escape(event_id)}\n"


def read_group(group: bytes) -> tuple[str, int, EventKind]:
    """``(app_id, slot_ms, kind)`` of a line's first three fields, as :class:`PartitionCount` gives them."""
    app, slot, kind = group.decode("utf-8").split("\t")
    return unescape(app), int(slot), _KINDS[kind]


def partition_of(slot_ms: int, partitions: int) -> int:
    """The partition of a slot: its number modulo the number of partitions."""
    return slot_ms // SLOT_MS % partitions


def partitions_for(memory_needed: float, budget_bytes: int, most: int) -> int:
    """How many partitions so that each needs at most ``budget_bytes``: at least 1, at most ``most``, coprime with 288.

    Example:
        >>> partitions_for(10e9, 128 << 20, 512), partitions_for(0, 128 << 20, 512), partitions_for(1e12, 1, 50)
        (77, 1, 49)
    """
    wanted = max(1, min(most, math.ceil(memory_needed / budget_bytes)))
    while wanted > 1 and math.gcd(wanted, SLOTS_PER_DAY) != 1:
        wanted += 1 if wanted < most else -1
    return wanted


def partition_files(directory: Path, partition: int) -> list[Path]:
    """Every writer's file of one partition."""
    return sorted(directory.glob(f"p{partition:05d}.*"))


class SpillWriter:
    """One process's spill files, a file per partition; lines wait in :attr:`buffers` and are written in batches.

    The counting loop appends lines (:func:`spill_line`'s form) to
    ``buffers[partition_of(slot_ms, partitions)]`` itself (a call per event
    would cost more than the appending) and calls :meth:`flush_if_full`.
    """

    def __init__(self, directory: Path, name: str, partitions: int, flush_lines: int = 1 << 16) -> None:
        self.directory = directory
        self.name = name
        self.partitions = partitions
        self.buffers: list[list[str]] = [[] for _ in range(partitions)]
        self.flush_lines = flush_lines
        self.written = 0
        """Lines written so far."""
        self._files: list[BinaryIO | None] = [None] * partitions

    def add(self, app_id: str, slot_ms: int, kind: EventKind, event_id: str) -> None:
        self.buffers[partition_of(slot_ms, self.partitions)].append(spill_line(app_id, slot_ms, kind, event_id))

    def flush_if_full(self) -> None:
        if sum(map(len, self.buffers)) >= self.flush_lines:
            self.flush()

    def flush(self) -> None:
        """Write every waiting line (to the operating system: another process may read the files next)."""
        for partition, lines in enumerate(self.buffers):
            if not lines:
                continue
            handle = self._files[partition]
            if handle is None:
                handle = self._files[partition] = (self.directory / f"p{partition:05d}.{self.name}").open("ab")
            handle.write("".join(lines).encode("utf-8"))
            handle.flush()
            self.written += len(lines)
            self.buffers[partition] = []

    def close(self) -> None:
        self.flush()
        for handle in self._files:
            if handle is not None:
                handle.close()
        self._files = [None] * self.partitions


@dataclass
class PartitionCount:
    """One partition counted: distinct lines per ``APP \\t SLOT \\t KIND`` (:func:`read_group`), lines read."""

    groups: Counter[bytes]
    lines: int
    distinct: int
    splits: int = 0
    """How often the partition, or a part of it, outgrew the budget and was split again."""

    def add(self, other: PartitionCount) -> None:
        self.groups.update(other.groups)
        self.lines += other.lines
        self.distinct += other.distinct
        self.splits += other.splits


def count_partition(
    paths: Sequence[Path],
    budget_bytes: int,
    scratch: Path,
    done: Callable[[int], None] | None = None,
    depth: int = 0,
) -> PartitionCount:
    """Count the distinct lines of a partition's files, holding at most about ``budget_bytes`` of them.

    Past the budget, the partition is split by a hash of the whole line into
    files under ``scratch`` (removed after) and each part counted alone.
    ``done(n)`` is told the bytes of the files read so far.
    """
    seen: set[bytes] = set()
    lines = 0
    held = 0
    for block in _blocks(paths, done):
        batch = block.split(b"\n")
        batch.pop()  # after the last newline
        before = len(seen)
        seen.update(batch)
        lines += len(batch)
        held += (len(seen) - before) * (len(block) // max(1, len(batch)) + LINE_OVERHEAD_BYTES)
        if held > budget_bytes and len(seen) > 1 and depth < MAX_SPLIT_DEPTH:
            del seen, batch
            return _count_split(paths, budget_bytes, scratch, done, depth)
    groups = Counter(line[: line.rindex(b"\t")] for line in seen)
    return PartitionCount(groups, lines, len(seen))


def _count_split(
    paths: Sequence[Path], budget_bytes: int, scratch: Path, done: Callable[[int], None] | None, depth: int
) -> PartitionCount:
    """Split the partition by a hash of the line (fresh at each depth) into parts that fit, and count each."""
    size = sum(path.stat().st_size for path in paths)
    parts = min(MAX_SPLIT_PARTS, max(2, math.ceil(2 * size * (1 + LINE_OVERHEAD_BYTES / 40) / budget_bytes)))
    folder = Path(tempfile.mkdtemp(prefix=f"split{depth}-", dir=scratch))
    try:
        buckets: list[list[bytes]] = [[] for _ in range(parts)]
        handles = [(folder / str(part)).open("wb") for part in range(parts)]
        try:
            for block in _blocks(paths, done):
                batch = block.split(b"\n")
                batch.pop()
                for line in batch:
                    buckets[hash((depth, line)) % parts].append(line)
                for part, bucket in enumerate(buckets):
                    if bucket:
                        handles[part].write(b"\n".join(bucket) + b"\n")
                        buckets[part] = []
        finally:
            for handle in handles:
                handle.close()
        total = PartitionCount(Counter(), 0, 0, splits=1)
        for part in range(parts):
            total.add(count_partition([folder / str(part)], budget_bytes, folder, None, depth + 1))
            (folder / str(part)).unlink()
        return total
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _blocks(paths: Sequence[Path], done: Callable[[int], None] | None) -> Iterator[bytes]:
    """The files' bytes in blocks of whole lines; ``done`` told the bytes read across them."""
    before = 0
    for path in paths:
        size = path.stat().st_size
        yield from read_blocks(Piece(path, 0, size, size, size), _offset(done, before))
        before += size


def _offset(done: Callable[[int], None] | None, before: int) -> Callable[[int], None]:
    return (lambda read: done(before + read)) if done is not None else (lambda read: None)
