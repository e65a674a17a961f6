"""The live month pages: each app's statement served from Redis while the workers count (docs/statements.md).

Routes (served beside ``/metrics`` by :mod:`stream.live.web`):

=======================================  ===================================================================
``/``                                    index: apps' running months, worst budget first, filtered and paged
                                         (``?sort=&status=&q=&page=``, :mod:`stream.statements.index_query`)
``/apps/{app}/months/{YYYY-MM}``         the app's service month in that calendar month, as a page that
                                         refreshes itself (several service months: a list of them, 300)
``/apps/{app}/months/{YYYY-MM-DD}``      the app's service month starting that day
``… .json`` / ``… .csv``                 the same statement as JSON (figures and digest) or slot CSV
=======================================  ===================================================================

The page is the file page's renderer (:func:`stream.statements.month_page.render_month_page`)
given a :class:`~stream.statements.month_page.LiveContext`, and the statement
is built by the offline report's own function from every slot Redis holds
(:func:`stream.live.ledger.statements_from_store`), so a page, a replay and a
report of the same events show the same figures and digest.

A request is routed on the web server's thread, and what is cheap is
answered there (an unknown app, a month that does not exist or has not
begun); a statement is built in a process of its own at the lowest CPU
priority (:mod:`stream.live.page_builds`: a month page costs about 0.3 s of
CPU), so page requests never take the worker's interpreter from counting.
The index reads the figures of the worker's last metrics snapshot (taken
every few seconds), not Redis, and says when that snapshot was taken.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from html import escape
from urllib.parse import parse_qs, quote, unquote

from redis.exceptions import RedisError

from stream.config import Settings
from stream.formats import statement_to_json
from stream.live.exemptions import current_exemptions
from stream.live.ledger import statements_from_store
from stream.live.metrics import Snapshot
from stream.live.page_builds import PageBuilders
from stream.live.store import Store, redis_client
from stream.sla.months import ServiceMonth, begun_by, service_months_in
from stream.sla.slots import local_time
from stream.statements import slot_csv
from stream.statements.index_query import IndexEntry, IndexQuery, select
from stream.statements.month_page import LiveContext, render_index, render_month_page
from stream.statements.statement import Statement

REFRESH_S = 15
"""How often a live page reloads itself; ``?refresh=N`` (2 to 3600) asks for another interval."""

_MONTH = re.compile(r"(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?(?P<suffix>\.json|\.csv)?")
_REFRESH = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True)
class Response:
    """What a page request answers: status line, content type, body."""

    status: str
    content_type: str
    body: bytes

    @classmethod
    def text(cls, status: str, message: str) -> Response:
        return cls(status, "text/plain; charset=utf-8", (message + "\n").encode("utf-8"))


class LivePages:
    """Answers the page routes from Redis (statements) and the last metrics snapshot (index)."""

    def __init__(
        self,
        settings: Settings,
        snapshot: Callable[[], Snapshot | None],
        wall_clock: Callable[[], float] = time.time,
        builders: PageBuilders | None = None,
    ) -> None:
        self._settings = settings
        self._snapshot = snapshot
        self._wall_clock = wall_clock
        self.builders = builders or PageBuilders()

    def answer(self, raw_path: str, query: str) -> Response | None:
        """The response for ``raw_path``, the path as sent (percent-encoded); None: not a page route.

        The app id is decoded from its own path segment, once, as UTF-8, so an
        id holding ``/`` or ``%`` (``month_href`` encodes it) names that app.
        """
        refresh = _refresh(query)
        if refresh is None:
            return Response.text("400 Bad Request", "refresh must be a whole number of seconds from 2 to 3600")
        if raw_path in ("/", "/apps", "/apps/"):
            try:
                index_query = IndexQuery.parse(query)
            except ValueError as error:
                return Response.text("400 Bad Request", str(error))
            return self._index(refresh, index_query)
        parts = raw_path.split("/")
        if len(parts) != 5 or parts[0] != "" or parts[1] != "apps" or parts[3] != "months" or not parts[2]:
            return None
        try:
            app_id = unquote(parts[2], errors="strict")
        except UnicodeDecodeError:
            return Response.text("404 Not Found", "the app id in the path is not UTF-8")
        try:  # before a build slot is taken: a storm of unknown apps must not hold the known ones up
            known = app_id in self._settings.apps or asyncio.run(self._knows(app_id))
        except (RedisError, OSError) as error:
            return Response.text("503 Service Unavailable", f"Redis is not answering ({type(error).__name__})")
        if not known:
            return Response.text("404 Not Found", f"app {app_id} has no terms on record and no traffic counted")
        named = _MONTH.fullmatch(parts[4])
        months = None if named is None else self._service_months(app_id, named)
        if named is None or months is None:
            return Response.text("404 Not Found", f"no such month: {parts[4]} (YYYY-MM or YYYY-MM-DD, from 1970)")
        if not months:
            return Response.text("404 Not Found", f"no service month of app {app_id} falls in {parts[4]}")
        tz = self._settings.policy.timezone
        begun = begun_by(months, tz, int(self._wall_clock() * 1000))
        if not begun:
            begins = local_time(months[0].span_ms(tz)[0], tz).isoformat(timespec="minutes")
            return Response.text("404 Not Found", f"{parts[4].split('.')[0]} has not begun: it starts {begins}")
        months = begun  # a service month not begun has no figure yet, not a clean one
        suffix = named["suffix"] or ""
        if len(months) > 1 and not suffix:
            return self._choice(app_id, months)
        snapshot = self._snapshot()
        # When the live figures are as of: the job's watermark in the last snapshot, so an input silent up to it
        # is silent and a backlog not read yet is not claimed silent (None: the builder reads the least time).
        watermark = None if snapshot is None else snapshot.watermark_ms
        request = PageRequest(
            self._settings, app_id, tuple(months), suffix, refresh, watermark, int(self._wall_clock() * 1000)
        )
        return self.builders.run(build_month_response, request, _busy)

    def _context(self, refresh: int, as_of_ms: int | None = None) -> LiveContext:
        now_ms = int(self._wall_clock() * 1000) if as_of_ms is None else as_of_ms
        return LiveContext(refresh_s=refresh, now_ms=now_ms, index_href="/")

    def _index(self, refresh: int, query: IndexQuery) -> Response:
        snapshot = self._snapshot()
        entries = [] if snapshot is None else _index_entries(snapshot)
        html = render_index(
            select(entries, query),
            self._context(refresh, None if snapshot is None else snapshot.taken_ms),  # as of the snapshot
            "sla-stream: every app's running month",
            timezone=self._settings.policy.timezone,
            coverage=None if snapshot is None else snapshot.coverage,
        )
        return Response("200 OK", "text/html; charset=utf-8", html.encode("utf-8"))

    def _choice(self, app_id: str, months: list[ServiceMonth]) -> Response:
        links = "".join(
            f'<li><a href="{escape(month_href(app_id, m.first_day))}">{escape(str(m))}</a></li>' for m in months
        )
        body = f"<!doctype html><title>Service months of {escape(app_id)}</title><ul>{links}</ul>"
        return Response("300 Multiple Choices", "text/html; charset=utf-8", body.encode("utf-8"))

    def _service_months(self, app_id: str, named: re.Match[str]) -> list[ServiceMonth] | None:
        """The app's service months in calendar month ``YYYY-MM``, or the one starting on ``YYYY-MM-DD``;
        None when that is no date (or outside 1970–9998)."""
        year, month = int(named["year"]), int(named["month"])
        if not (1970 <= year <= 9998 and 1 <= month <= 12):
            return None
        in_month = service_months_in(year, month, self._settings.terms(app_id).subscriptions)
        if named["day"] is None:
            return in_month
        try:
            first_day = date(year, month, int(named["day"]))
        except ValueError:
            return None
        return [m for m in in_month if m.first_day == first_day]

    async def _knows(self, app_id: str) -> bool:
        """Whether the app has had an event counted (one set lookup in Redis)."""
        redis = redis_client(self._settings.redis_url, socket_timeout_s=5.0, cluster=self._settings.redis_cluster)
        try:
            return await Store.of(redis, self._settings).knows_app(app_id)
        finally:
            await redis.aclose()


@dataclass(frozen=True)
class PageRequest:
    """What a builder process needs to answer a statement route (picklable)."""

    settings: Settings
    app_id: str
    months: tuple[ServiceMonth, ...]
    suffix: str
    """``""`` (the page), ``.json`` or ``.csv``."""
    refresh: int
    watermark_ms: int | None
    """The job's watermark in the worker's last snapshot (None: read the partitions' least stream time)."""
    now_ms: int


def build_month_response(request: PageRequest) -> Response:
    """The statement route's answer, built from Redis (in a builder process: :mod:`stream.live.page_builds`)."""
    settings = request.settings
    try:
        statements = asyncio.run(_statements(request))
    except (RedisError, OSError) as error:
        return Response.text("503 Service Unavailable", f"Redis is not answering ({type(error).__name__})")
    if not any(s.coverage.has_data or s.slots or s.open_slots for s in statements):
        month = request.months[0].first_day
        return Response.text(
            "404 Not Found",
            f"no events of {month:%Y-%m} were read by this deployment (as of "
            f"{local_time(statements[0].coverage.as_of_ms, settings.policy.timezone):%Y-%m-%d %H:%M}): "
            f"no figures without data (`sla-stream replay --month {month:%Y-%m}` counts it from the topics)",
        )
    if request.suffix == ".json":
        body = json.dumps([statement_to_json(s) for s in statements], indent=2)
        return Response("200 OK", "application/json", body.encode("utf-8"))
    if request.suffix == ".csv":
        out = io.StringIO()
        slot_csv.write_csv(statements, out)
        return Response("200 OK", "text/csv; charset=utf-8", out.getvalue().encode("utf-8"))
    context = LiveContext(refresh_s=request.refresh, now_ms=request.now_ms, index_href="/")
    return Response("200 OK", "text/html; charset=utf-8", render_month_page(statements[0], context).encode("utf-8"))


async def _statements(request: PageRequest) -> list[Statement]:
    """The live statements of the request's months."""
    settings = request.settings
    redis = redis_client(settings.redis_url, socket_timeout_s=5.0, cluster=settings.redis_cluster)
    try:
        store = Store.of(redis, settings)
        exemptions = await current_exemptions(store, settings)
        as_of_ms = request.watermark_ms
        if as_of_ms is None:  # a partition without a time yet: never past what every one has read
            least = await store.least_stream_time()
            as_of_ms = 0 if least is None else least
        return await statements_from_store(
            store, settings, request.app_id, list(request.months), exemptions, "live", as_of_ms
        )
    finally:
        await redis.aclose()


def _busy(why: str) -> Response:
    return Response.text("503 Service Unavailable", why)


def month_href(app_id: str, month: date | str) -> str:
    """The path of an app's month page: ``month`` a service month's first day, or ``YYYY-MM``.

    Example:
        >>> month_href("1400000001", date(2026, 10, 1)), month_href("a/b", "2026-10")
        ('/apps/1400000001/months/2026-10-01', '/apps/a%2Fb/months/2026-10')
    """
    text = month.isoformat() if isinstance(month, date) else month
    return f"/apps/{quote(app_id, safe='')}/months/{text}"


def _index_entries(snapshot: Snapshot) -> list[IndexEntry]:
    """Each app of the snapshot with its running service month (and its page), or none."""
    return [
        IndexEntry(app_id, "" if figures.month is None else month_href(app_id, figures.month.first_day), figures.month)
        for app_id, figures in sorted(snapshot.apps.items())
    ]


def _refresh(query: str) -> int | None:
    """The refresh interval a query asks for (default :data:`REFRESH_S`); None when it is not a valid one."""
    values = parse_qs(query).get("refresh")
    if not values:
        return REFRESH_S
    text = values[-1]
    if not _REFRESH.fullmatch(text) or not 2 <= int(text) <= 3600:
        return None
    return int(text)
