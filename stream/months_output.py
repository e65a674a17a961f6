"""Writing a month's statements as ``report`` and ``replay`` print them, one statement at a time.

The same bytes for the same figures, whichever command counted them: JSON,
text or the slot CSV on stdout, or a page per app and service month into a
directory. Each statement is written (or reduced to its lines) as it comes,
and dropped: a replay of 10,000 apps holds one app's slots at a time, not
the month's millions.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

from stream.formats import statement_to_json
from stream.report import TextReport
from stream.statements import page_files
from stream.statements.slot_csv import SlotCsvWriter
from stream.statements.statement import Statement

Format = Literal["text", "json", "csv", "html"]


class MonthsOutput:
    """Takes statements one by one (:meth:`add`), then :meth:`finish`; remembers what ``--strict`` needs."""

    def __init__(
        self,
        fmt: Format,
        out: TextIO,
        tz: ZoneInfo,
        title: str,
        directory: Path | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self._fmt = fmt
        self._out = out
        self._directory = directory
        self._say = say
        self._text = TextReport(tz, title) if fmt == "text" else None
        self._csv = SlotCsvWriter(out) if fmt == "csv" else None
        self.count = 0
        """Statements written."""
        self.incomplete = False
        """Whether a statement's data leaves a silent period (``--strict``)."""

    def add(self, statement: Statement) -> None:
        self.incomplete |= not statement.coverage.complete
        if self._text is not None:
            self._text.add(statement)
        elif self._csv is not None:
            self._csv.add(statement)
        elif self._fmt == "json":  # the bytes of json.dumps(list, indent=2), an element at a time
            self._out.write(("[\n" if self.count == 0 else ",\n") + _indented(statement))
        else:
            assert self._directory is not None
            for path in page_files.write_pages([statement], self._directory):
                self._say(f"wrote {path}")
        self.count += 1

    def finish(self) -> None:
        if self._text is not None:
            self._out.write(self._text.text() + "\n")
        elif self._csv is not None:
            self._csv.finish()
        elif self._fmt == "json":
            self._out.write("[]\n" if self.count == 0 else "\n]\n")
        self._out.flush()


def _indented(statement: Statement) -> str:
    return textwrap.indent(json.dumps(statement_to_json(statement), indent=2), "  ")
