"""Which event files ``report --events`` names, and reading them in blocks of whole lines.

Why a module of its own: what a spec means (a file, a directory, a glob),
what is refused and how it is said (one line naming the spec or the file),
and how a file is cut into pieces that can be read in parallel, are the same
whoever counts the lines. Each ``--events`` spec is, in this order:

- an existing **file**: read as given, whatever its name; a name ending in
  ``.gz`` is read as gzip (several members concatenated are fine);
- an existing **directory**: every ``*.jsonl`` and ``*.jsonl.gz`` directly
  inside, sorted by name;
- a **glob** (``events/*.jsonl.gz``, ``**`` for any depth): every match,
  sorted; a matching directory stands for its event files as above.

Files are kept in the order the specs give them; a file named twice is read
twice (its events then count as duplicates), as the report always did.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("b.jsonl", "a.jsonl.gz", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [p.name for p in event_files([str(folder)])]
    ['a.jsonl.gz', 'b.jsonl']
    >>> [p.name for p in event_files([str(folder / "*.jsonl"), str(folder / "notes.txt")])]
    ['b.jsonl', 'notes.txt']
    >>> event_files([str(folder / "*.csv")])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.offline.files.EventFilesError: no event files match .../*.csv
"""

from __future__ import annotations

import glob
import gzip
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

EVENT_SUFFIXES = (".jsonl", ".jsonl.gz")
"""The files a directory contributes."""

BLOCK_BYTES = 4 << 20
"""Bytes read at a time (decompressed, for gzip): large enough for the parser's batches, small enough to hold."""

_GLOB_MAGIC = re.compile(r"[*?\[]")


class EventFilesError(Exception):
    """Event files that cannot be counted: a spec that matched nothing, a missing file, a corrupt gzip. One line."""


def event_files(specs: Sequence[str]) -> list[Path]:
    """Every file the specs name, in the specs' order; :class:`EventFilesError` for a spec that names none."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = _directory_files(path)
            if not inside:
                raise EventFilesError(f"no event files ({', '.join('*' + s for s in EVENT_SUFFIXES)}) in {spec}")
            found += inside
        elif _GLOB_MAGIC.search(spec):
            matched: list[Path] = []
            for match in sorted(glob.glob(spec, recursive=True)):
                matched += _directory_files(Path(match)) if Path(match).is_dir() else [Path(match)]
            if not matched:
                raise EventFilesError(f"no event files match {spec}")
            found += matched
        else:
            raise EventFilesError(f"event file not found: {spec}")
    return found


def _directory_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(EVENT_SUFFIXES) and p.is_file())


def is_gzip(path: Path) -> bool:
    """Whether a file is read as gzip: by its name, so a damaged one is refused as such, not read as text."""
    return path.name.endswith(".gz")


def estimated_size(path: Path) -> int:
    """How many bytes of lines a file may hold, erring high: its size, or for gzip what it takes uncompressed.

    For gzip, :func:`recorded_size` or 10 times the compressed size, the
    larger. It sizes the partitions: too high costs a few more of them, too
    low a partition split again while it is counted; never exactness or memory.
    """
    size = path.stat().st_size
    return max(recorded_size(path), 10 * size) if is_gzip(path) else size


def recorded_size(path: Path) -> int:
    """The uncompressed size a gzip file records, or its size if it records none worth believing.

    A gzip file ends with its (last member's) uncompressed size modulo 4 GiB:
    exact for the usual file, too small for one of several members or of
    more than 4 GiB, so never taken below the compressed size.
    """
    size = path.stat().st_size
    if not is_gzip(path) or size < 18:
        return size
    with path.open("rb") as handle:
        handle.seek(-4, 2)
        return max(size, int.from_bytes(handle.read(4), "little"))


@dataclass(frozen=True)
class Piece:
    """A part of a file to read alone: bytes ``[start, end)`` of a plain file, or all of a gzip file (``end`` None).

    A piece of a plain file starts at the file's start or just after a
    newline, and ends just after a newline or at the file's end, so it holds
    whole lines.
    """

    path: Path
    start: int
    end: int | None
    size: int
    """Bytes to read: the piece's, or the gzip file's compressed size."""
    work: int
    """Bytes of lines it holds: its size, or for gzip the uncompressed size it records (the measure of progress)."""


def pieces(path: Path, target_bytes: int) -> list[Piece]:
    """The file cut into pieces of about ``target_bytes`` of whole lines each (a gzip file is one piece).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "e.jsonl"
        >>> _ = path.write_bytes(b"aaaa\\nbbbb\\ncc\\n\\ndd")
        >>> [(p.start, p.end) for p in pieces(path, 4)]
        [(0, 5), (5, 10), (10, 14), (14, 16)]
    """
    size = path.stat().st_size
    if is_gzip(path):
        return [Piece(path, 0, None, size, recorded_size(path))]
    cuts = [0]
    with path.open("rb") as handle:
        while cuts[-1] + target_bytes < size:
            handle.seek(cuts[-1] + target_bytes - 1)  # a newline right there ends the piece at the target
            cut = _after_next_newline(handle)
            if cut is None or cut >= size:
                break
            cuts.append(cut)
    cuts.append(size)
    return [Piece(path, a, b, b - a, b - a) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _after_next_newline(handle: BinaryIO) -> int | None:
    while block := handle.read(1 << 16):
        at = block.find(b"\n")
        if at >= 0:
            return handle.tell() - len(block) + at + 1
    return None


def read_blocks(piece: Piece, done: Callable[[int], None], block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The piece's bytes in blocks of whole lines, of about ``block_bytes``, each ending with a newline but perhaps
    the last (the file's last line, without one).

    ``done(n)`` is told the bytes of the piece read so far (compressed, for
    gzip). A gzip file that is truncated or damaged stops the reading with an
    :class:`EventFilesError` naming it.
    """
    with piece.path.open("rb") as raw:
        if piece.end is None:
            stream: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb")
            remaining = None
        else:
            raw.seek(piece.start)
            stream = raw
            remaining = piece.end - piece.start
        rest = b""  # what followed the last newline
        longer: list[bytes] = []  # blocks without a newline since: a line longer than a block, joined once
        while True:
            block = _read(stream, piece.path, block_bytes if remaining is None else min(block_bytes, remaining))
            if remaining is not None:
                remaining -= len(block)
            done(raw.tell() - piece.start)
            if not block:
                break
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                longer.append(block)
                continue
            lines = block if cut == len(block) else block[:cut]
            if rest or longer:
                lines = b"".join([rest, *longer, lines])
                longer.clear()
            rest = block[cut:]
            yield lines
        if rest or longer:
            yield b"".join([rest, *longer])


def _read(stream: BinaryIO | gzip.GzipFile, path: Path, size: int) -> bytes:
    if size == 0:
        return b""
    try:
        return stream.read(size)
    except EOFError:
        raise EventFilesError(f"{path}: a truncated gzip file (it ends before its end-of-stream marker)") from None
    except gzip.BadGzipFile as error:
        raise EventFilesError(f"{path}: not a whole gzip file ({error})") from None
    except zlib.error as error:
        raise EventFilesError(f"{path}: damaged gzip data ({error})") from None
