"""What the live index shows of a fleet: apps filtered, sorted and cut into pages, from the page's query string.

At 10,000 apps one table of every app is 2 MB of HTML that nobody reads;
an operator wants the apps closest to breaching first, one app found by its
id, or the months already missed. The query says which (every parameter
optional)::

    /?sort=budget&status=missed&q=14000&page=2

``sort``: ``budget`` (least error budget left first: the default), ``availability``
(lowest first) or ``app`` (by id); ``status``: ``all`` (default), ``missed``,
``met``; ``q``: part of an app id; ``page``: from 1, :data:`PAGE_SIZE` apps each.
Apps without a running service month come last whatever the order.

Example:
    >>> query = IndexQuery.parse("sort=app&q=7&page=1")
    >>> query.sort, query.q, query.page
    ('app', '7', 1)
    >>> IndexQuery.parse("sort=worst")
    Traceback (most recent call last):
    ...
    ValueError: sort must be one of budget, availability, app
    >>> query.href(page=2)
    '/?sort=app&q=7&page=2'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, cast
from urllib.parse import parse_qs, urlencode

from stream.formats import MonthSummary

PAGE_SIZE = 100
"""Apps per index page."""

SORTS = ("budget", "availability", "app")
STATUSES = ("all", "missed", "met")
Q_MAX = 100
"""The longest app-id filter taken (app ids are short; a longer one is a mistake or an attack)."""

Sort = Literal["budget", "availability", "app"]
Status = Literal["all", "missed", "met"]

SORT_LABELS = (("budget", "least budget left first"), ("availability", "lowest availability first"), ("app", "app id"))
"""Each order, with the words the index's form gives it."""


@dataclass(frozen=True)
class IndexEntry:
    """One app on the live index."""

    app_id: str
    href: str
    """The app's running month page."""
    month: MonthSummary | None
    """Its running service month, as its month ledger says; None: no subscription covers today."""


@dataclass(frozen=True)
class IndexQuery:
    """Which apps the index shows, in which order, which page of them."""

    sort: Sort = "budget"
    status: Status = "all"
    q: str = ""
    page: int = 1
    refresh: int | None = None
    """The page's refresh interval, when the query set one (kept in the page's links)."""

    @classmethod
    def parse(cls, query: str) -> IndexQuery:
        """The query of ``query`` (a URL's query string); ValueError naming the parameter that is not valid.

        ``refresh`` is carried into the page's links as given (the page route checks it).
        """
        values = {key: found[-1] for key, found in parse_qs(query).items()}
        refresh = int(values["refresh"]) if values.get("refresh", "").isdigit() else None
        sort = values.get("sort", "budget")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        status = values.get("status", "all")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        q = values.get("q", "").strip()
        if len(q) > Q_MAX:
            raise ValueError(f"q (part of an app id) must be at most {Q_MAX} characters")
        page_text = values.get("page", "1")
        if not page_text.isdigit() or not 1 <= int(page_text) <= 1_000_000:
            raise ValueError("page must be a whole number from 1")
        return cls(cast(Sort, sort), cast(Status, status), q, int(page_text), refresh)

    def href(self, **changes: object) -> str:
        """The index path with this query (changed by ``changes``), defaults left out."""
        query = replace(self, **changes)  # type: ignore[arg-type]
        pairs = [
            (key, value)
            for key, value, default in (
                ("sort", query.sort, "budget"),
                ("status", query.status, "all"),
                ("q", query.q, ""),
                ("page", query.page, 1),
                ("refresh", query.refresh, None),
            )
            if value != default
        ]
        return "/" + (f"?{urlencode(pairs)}" if pairs else "")


@dataclass(frozen=True)
class IndexPage:
    """One page of the index: its entries, and where they stand among the apps."""

    query: IndexQuery
    entries: list[IndexEntry]
    matched: int
    """Apps the filters let through."""
    total: int
    """Apps in all."""

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.matched / PAGE_SIZE))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first entry among the matched (0: none)."""
        return (self.query.page - 1) * PAGE_SIZE + 1 if self.entries else 0


def select(entries: Sequence[IndexEntry], query: IndexQuery) -> IndexPage:
    """The page of ``entries`` that ``query`` asks for (a page past the last is empty, not an error)."""
    q = query.q.casefold()
    kept = [
        entry
        for entry in entries
        if q in entry.app_id.casefold()
        and (query.status == "all" or (entry.month is not None and entry.month.meets_sla == (query.status == "met")))
    ]
    kept.sort(key=lambda entry: _order(entry, query.sort))
    start = (query.page - 1) * PAGE_SIZE
    return IndexPage(query, kept[start : start + PAGE_SIZE], len(kept), len(entries))


def _order(entry: IndexEntry, sort: Sort) -> tuple[object, ...]:
    month = entry.month
    if month is None:
        return (1, 0, 0, entry.app_id)
    if sort == "budget":
        return (0, month.slots_left, month.availability, entry.app_id)
    if sort == "availability":
        return (0, month.availability, month.slots_left, entry.app_id)
    return (0, entry.app_id)
