"""Month pages written to a directory: one self-contained HTML file per app and service month.

Example:
    >>> from stream.sla.months import calendar_month
    >>> page_name("1400000001", calendar_month(2026, 10))
    '1400000001-2026-10-01.html'
    >>> page_name("../a b", calendar_month(2026, 10))  # an app id is never a path
    '..%2Fa%20b-2026-10-01.html'
    >>> len(page_name("é" * 256, calendar_month(2026, 10))) <= 255
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

from stream.sla.months import ServiceMonth
from stream.statements.month_page import render_month_page
from stream.statements.statement import Statement

MAX_APP_PART = 120
"""The most of a file name the encoded app id takes: app ids run to 256 characters, names to 255 bytes."""


def page_name(app_id: str, month: ServiceMonth) -> str:
    """The file name of an app's service month page: the app id percent-encoded, so it never leaves the directory;
    a long one is cut and told apart by a hash of it."""
    encoded = quote(app_id, safe="")
    if len(encoded) > MAX_APP_PART:
        cut = MAX_APP_PART - 17
        cut -= next((i for i in (1, 2) if encoded[cut - i] == "%"), 0)  # never inside a %XX escape
        encoded = f"{encoded[:cut]}~{sha256(app_id.encode()).hexdigest()[:16]}"
    return f"{encoded}-{month.first_day.isoformat()}.html"


def write_pages(statements: Iterable[Statement], directory: Path) -> list[Path]:
    """Write each statement's month page into ``directory`` (created if missing); the paths written, in order."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for statement in statements:
        path = directory / page_name(statement.app_id, statement.month)
        path.write_text(render_month_page(statement), encoding="utf-8")
        written.append(path)
    return written
