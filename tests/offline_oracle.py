"""The report's counting as it was before ``stream.offline``: the oracle the bounded counting is checked against.

Every line of every file is read in turn, decoded, parsed by the full rules
(:func:`stream.events.parse_line`) and added to one
:class:`stream.sla.counting.SlotTally`, which keeps every id in memory. This
is the code ``stream/report.py`` ran until the offline counting replaced it,
kept here word for word (gzip files opened with ``gzip.open``), so the new
counting can be compared with it figure for figure, bad line for bad line;
it marks each valid event's minute in a :class:`stream.sla.coverage.MinuteMap`
as it goes, the plainest way, for the coverage the report now states.

Run as a script, it is ``sla-stream`` with this counting in place of the
new one: ``python tests/offline_oracle.py report --events ... --format json``
prints the report the old implementation printed.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from stream.events import InvalidEvent, TimeBounds, parse_line
from stream.offline.counting import BadLine
from stream.sla.counting import SlotTally
from stream.sla.coverage import MinuteMap
from stream.sla.verdict import SlotCounts


def slot_tally_count(
    paths: Sequence[Path], tz: ZoneInfo, window_ms: tuple[int, int], bounds: TimeBounds
) -> tuple[SlotTally, list[BadLine], MinuteMap]:
    """Every valid event of the files counted into a ``SlotTally`` of the window; the lines that were not; the
    window's minutes with a valid event."""
    tally = SlotTally(tz, window_ms)
    bad: list[BadLine] = []
    covered = MinuteMap(*window_ms)
    for path in paths:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    event = parse_line(line, bounds)
                except UnicodeDecodeError as error:
                    bad.append(BadLine(path, number, f"not valid UTF-8 at byte {error.start}"))
                    continue
                except InvalidEvent as error:
                    bad.append(BadLine(path, number, str(error)))
                    continue
                tally.add(event.kind, event.app_id, event.event_id, event.counted_ts)
                covered.add(event.ts)
    return tally, bad, covered


class TallyCounts:
    """A ``SlotTally`` with the face of :class:`stream.offline.counting.CountedEvents`."""

    def __init__(self, tally: SlotTally, bad_lines: int, covered: MinuteMap) -> None:
        self.tally = tally
        self.covered = covered
        self.duplicates = tally.duplicates
        self.outside_window = tally.outside_window
        self.bad_lines = bad_lines

    def apps(self) -> set[str]:
        return self.tally.apps()

    def counts(self, app_id: str) -> dict[int, SlotCounts]:
        return self.tally.counts(app_id)


def count_event_files_by_tally(
    paths: Sequence[Path],
    tz: ZoneInfo,
    window_ms: tuple[int, int],
    bounds: TimeBounds,
    on_bad_line: Callable[[BadLine], None],
    progress: Any = None,
    **_: Any,
) -> TallyCounts:
    """What ``stream.offline.counting.count_event_files`` answers, counted the old way."""
    tally, bad, covered = slot_tally_count(paths, tz, window_ms, bounds)
    for line in bad:
        on_bad_line(line)
    return TallyCounts(tally, len(bad), covered)


def main(argv: Sequence[str]) -> int:
    """``sla-stream`` with the old counting."""
    from stream import cli
    from stream.offline import counting

    counting.count_event_files = count_event_files_by_tally  # type: ignore[assignment]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
