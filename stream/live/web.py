"""The worker's web server: ``/metrics``, the probes and the live month pages, on one address.

Served by waitress, a production WSGI server, on threads of its own, so a
scrape or a page never waits on the worker's event loop:

* a listen backlog of :data:`BACKLOG`, so a burst of connections is
  accepted, not dropped and retried by the clients a second later;
* at most :data:`THREADS` requests run at once (the rest queue), so a storm
  of page requests takes a bounded share of the worker's CPU;
* a connection idle for :data:`IDLE_S` is closed quietly;
* ``HEAD`` answers the headers of ``GET`` without the body.

``/metrics`` is the worker's exposition
(:meth:`stream.live.metrics.WorkerMetrics.exposition`); ``/healthz`` and
``/readyz`` answer from :class:`stream.live.probes.Probes` (200 or 503 with a
line saying why); every other path goes to
:class:`stream.live.pages.LivePages` (404 when it is not a page).

With ``[web] pages_token`` or ``metrics_token`` set, the pages or
``/metrics`` answer 401 to a request without the token (``Authorization:
Bearer TOKEN``, or basic auth with the token as password, which a browser
asks for); the probes never ask.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from prometheus_client import CONTENT_TYPE_LATEST
from waitress.server import BaseWSGIServer, MultiSocketServer

from stream.config import WebAccess
from stream.live.pages import LivePages, Response
from stream.live.probes import Probes

StartResponse = Callable[..., Any]

THREADS = 4
BACKLOG = 1024
IDLE_S = 30
CONNECTIONS = 1000
"""Open connections at most; more wait in the backlog."""
OPEN = WebAccess()
"""No token asked for anything (the default: the port kept on loopback)."""

for _name in ("waitress", "waitress.queue"):  # "Serving on ..." and queue-depth warnings: a storm is the pages' to bear
    logging.getLogger(_name).setLevel(logging.ERROR)


def web_app(
    exposition: Callable[[], bytes], pages: LivePages, probes: Probes, access: WebAccess = OPEN
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app: ``/metrics``, ``/healthz``, ``/readyz``, the page routes from ``pages``, 404 for anything else;
    the tokens of ``access`` asked for."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _send(start_response, method, Response.text("405 Method Not Allowed", "only GET and HEAD"))
        if path in ("/healthz", "/readyz"):
            ok, why = probes.alive() if path == "/healthz" else probes.ready()
            return _send(start_response, method, Response.text("200 OK" if ok else "503 Service Unavailable", why))
        guard, what = (access.metrics_token, "metrics") if path == "/metrics" else (access.pages_token, "pages")
        if guard is not None and not _offers(environ.get("HTTP_AUTHORIZATION", ""), guard):
            refusal = Response.text("401 Unauthorized", f"the {what} need the token of [web] {what}_token")
            return _send(start_response, method, refusal, [("WWW-Authenticate", 'Basic realm="sla-stream"')])
        if path == "/metrics":
            return _send(start_response, method, Response("200 OK", CONTENT_TYPE_LATEST, exposition()))
        if path == "/favicon.ico":  # browsers ask for one; the pages have none
            return _send(start_response, method, Response("204 No Content", "text/plain", b""))
        # The path as sent (percent-encoded): the pages decode the app id from its own segment.
        raw_path = (environ.get("REQUEST_URI") or path).split("?", 1)[0]
        response = pages.answer(raw_path, environ.get("QUERY_STRING", ""))
        if response is None:
            response = Response.text("404 Not Found", "not found: try / (every app's month) or /metrics")
        return _send(start_response, method, response)

    return app


def _offers(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``: as a bearer token, or as basic auth's password.

    Compared in constant time (a timing difference must not tell a guesser how much of the token was right).

    Example:
        >>> _offers("Bearer s3cret", "s3cret"), _offers("Basic " + base64.b64encode(b"me:s3cret").decode(), "s3cret")
        (True, True)
        >>> _offers("Bearer s3cre", "s3cret"), _offers("Basic !!", "s3cret"), _offers("", "s3cret")
        (False, False, False)
    """
    scheme, _, credentials = authorization.strip().partition(" ")
    offered = credentials.strip()
    if scheme.lower() == "basic":
        try:
            offered = base64.b64decode(offered, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


def _send(
    start_response: StartResponse, method: str, response: Response, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        *(extra or []),
    ]
    if response.status.startswith("405"):
        headers.append(("Allow", "GET, HEAD"))
    start_response(response.status, headers)
    return [] if method == "HEAD" else [response.body]


def serve(
    host: str,
    port: int,
    exposition: Callable[[], bytes],
    pages: LivePages,
    probes: Probes,
    access: WebAccess = OPEN,
) -> BaseWSGIServer | MultiSocketServer:
    """Serve :func:`web_app` on ``host:port`` from a daemon thread; raises ``OSError`` when the address is taken."""
    server = waitress.create_server(
        web_app(exposition, pages, probes, access),
        host=host,
        port=port,
        threads=THREADS,
        backlog=BACKLOG,
        channel_timeout=IDLE_S,
        cleanup_interval=IDLE_S,  # how often idle connections are looked for (waitress: every 30 s)
        connection_limit=CONNECTIONS,
        ident="sla-stream",
        expose_tracebacks=False,
    )
    threading.Thread(target=server.run, name="sla-web", daemon=True).start()
    return server
