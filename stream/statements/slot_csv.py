"""The slot CSV: every slot with traffic of each statement, one row each, then each statement's digest.

Written for spreadsheets and for checking by hand: UTF-8 with a header row,
rates as plain decimals truncated to six places (no float noise), times as
local ISO 8601 with their offset, an exemption's note on one line (control
characters become spaces). The first six columns are the canonical
listing (:mod:`stream.statements.listing`), so the digest can be recomputed
from them. The footer has lines starting with ``#``: each statement's digest,
then, for a month still running, when its figures are as of, and each silent
period of the input (no data, not no traffic: :mod:`stream.sla.coverage`)::

    # digest 1400000001 2026-10-01/2026-10-31 sha256 9f86d0...
    # so far 1400000001 2026-10-01/2026-10-31 as of 2026-10-21T16:05:00+08:00
    # no data 1400000001 2026-10-01/2026-10-31 2026-10-03T10:00:00+08:00/2026-10-03T11:20:00+08:00 80 minutes

Example:
    >>> import io
    >>> from zoneinfo import ZoneInfo
    >>> from stream.sla.claims import WorkingDayCalendar
    >>> from stream.sla.months import calendar_month
    >>> from stream.sla.policy import SlaPolicy
    >>> from stream.sla.verdict import SlotCounts
    >>> from stream.statements.statement import build_statement
    >>> from stream.sla.coverage import MinuteMap
    >>> start, end = calendar_month(2019, 3).span_ms(SlaPolicy().timezone)
    >>> none_before_00_56 = MinuteMap(start, end, bytes(7) + bytes([255]) * 6000)
    >>> s = build_statement("app", calendar_month(2019, 3), {1552183200000: SlotCounts(200, 197)}, (),
    ...                     WorkingDayCalendar(), None, SlaPolicy(), "report", covered=none_before_00_56,
    ...                     as_of_ms=end)
    >>> out = io.StringIO()
    >>> write_csv([s], out)
    >>> print(out.getvalue().replace("\\r", ""), end="")
    app_id,service_month,slot_start,requests,successes,verdict,success_rate,clause,note,revision
    app,2019-03-01/2019-03-31,2019-03-10T10:00:00+08:00,200,197,unavailable,0.985,,,
    # digest app 2019-03-01/2019-03-31 sha256 afe3dbca395b4ed96c0c8accb7e3480be1efc6aafaa3c7fd65db3bad11c52003
    # no data app 2019-03-01/2019-03-31 2019-03-01T00:00:00+08:00/2019-03-01T00:56:00+08:00 56 minutes
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from typing import TextIO

from stream.sla.slots import local_time
from stream.statements.listing import service_month_text, slot_start_text
from stream.statements.statement import Statement

COLUMNS = (
    "app_id",
    "service_month",
    "slot_start",
    "requests",
    "successes",
    "verdict",
    "success_rate",
    "clause",
    "note",
    "revision",
)
"""The CSV's header; the first six are the canonical listing's fields, in its order."""

DIGEST_PREFIX = "# digest "
SO_FAR_PREFIX = "# so far "
NO_DATA_PREFIX = "# no data "


def rows(statement: Statement) -> Iterator[list[str]]:
    """The statement's slot rows, in time order, as the CSV writes them (strings, no header)."""
    tz = statement.policy.timezone
    month = service_month_text(statement.month)
    for line in statement.slots:
        exemption = line.exemption
        yield [
            statement.app_id,
            month,
            slot_start_text(line.slot_ms, tz),
            str(line.counts.requests),
            str(line.counts.successes),
            line.verdict,
            line.success_rate_text,
            exemption.clause if exemption else "",
            _one_line(exemption.note) if exemption else "",
            "" if line.revision is None else str(line.revision),
        ]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """A free-text field (an exemption's note) on one line: a line break inside it would let a line-based
    reader (``grep``, the digest recipe) take part of the note for a row or a footer line.

    Example:
        >>> _one_line("maintenance\\n# digest forged")
        'maintenance # digest forged'
    """
    return _CONTROL.sub(" ", text)


def digest_line(statement: Statement) -> str:
    """The footer line naming a statement's digest."""
    return f"{DIGEST_PREFIX}{statement.app_id} {service_month_text(statement.month)} sha256 {statement.digest}"


def coverage_lines(statement: Statement) -> list[str]:
    """The footer lines saying a statement's figures are so far, and where its input has no data."""
    tz = statement.policy.timezone
    named = f"{statement.app_id} {service_month_text(statement.month)}"
    coverage = statement.coverage
    lines = []
    if statement.running:
        lines.append(f"{SO_FAR_PREFIX}{named} as of {local_time(coverage.as_of_ms, tz).isoformat()}")
    for period in coverage.silent:
        span = f"{local_time(period.start_ms, tz).isoformat()}/{local_time(period.end_ms, tz).isoformat()}"
        lines.append(f"{NO_DATA_PREFIX}{named} {span} {period.minutes} minutes")
    return lines


def write_csv(statements: Iterable[Statement], out: TextIO) -> None:
    """The slot CSV of ``statements`` (header, every slot row, then each statement's footer lines) to ``out``."""
    writer = SlotCsvWriter(out)
    for statement in statements:
        writer.add(statement)
    writer.finish()


class SlotCsvWriter:
    """The slot CSV written one statement at a time: its rows at once, its footer lines kept for the end.

    Nothing is written before the first statement or :meth:`finish`: a command that fails before it has a
    statement prints no half of a CSV.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._rows = csv.writer(out)
        self._footers: list[str] | None = None

    def add(self, statement: Statement) -> None:
        footers = self._started()
        self._rows.writerows(rows(statement))
        footers += [digest_line(statement), *coverage_lines(statement)]

    def finish(self) -> None:
        for line in self._started():
            self._out.write(line + "\r\n")

    def _started(self) -> list[str]:
        if self._footers is None:
            self._rows.writerow(COLUMNS)
            self._footers = []
        return self._footers
