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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from prometheus_client import CONTENT_TYPE_LATEST
from waitress.server import BaseWSGIServer, MultiSocketServer

from stream.live.pages import LivePages, Response
from stream.live.probes import Probes

StartResponse = Callable[..., Any]

THREADS = 4
BACKLOG = 1024
IDLE_S = 30
CONNECTIONS = 1000
"""Open connections at most; more wait in the backlog."""

for _name in ("waitress", "waitress.queue"):  # "Serving on ..." and queue-depth warnings: a storm is the pages' to bear
    logging.getLogger(_name).setLevel(logging.ERROR)


def web_app(
    exposition: Callable[[], bytes], pages: LivePages, probes: Probes
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app: ``/metrics``, ``/healthz``, ``/readyz``, the page routes from ``pages``, 404 for anything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _send(start_response, method, Response.text("405 Method Not Allowed", "only GET and HEAD"))
        if path == "/metrics":
            return _send(start_response, method, Response("200 OK", CONTENT_TYPE_LATEST, exposition()))
        if path in ("/healthz", "/readyz"):
            ok, why = probes.alive() if path == "/healthz" else probes.ready()
            return _send(start_response, method, Response.text("200 OK" if ok else "503 Service Unavailable", why))
        if path == "/favicon.ico":  # browsers ask for one; the pages have none
            return _send(start_response, method, Response("204 No Content", "text/plain", b""))
        # The path as sent (percent-encoded): the pages decode the app id from its own segment.
        raw_path = (environ.get("REQUEST_URI") or path).split("?", 1)[0]
        response = pages.answer(raw_path, environ.get("QUERY_STRING", ""))
        if response is None:
            response = Response.text("404 Not Found", "not found: try / (every app's month) or /metrics")
        return _send(start_response, method, response)

    return app


def _send(start_response: StartResponse, method: str, response: Response) -> list[bytes]:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
    ]
    if response.status.startswith("405"):
        headers.append(("Allow", "GET, HEAD"))
    start_response(response.status, headers)
    return [] if method == "HEAD" else [response.body]


def serve(
    host: str, port: int, exposition: Callable[[], bytes], pages: LivePages, probes: Probes
) -> BaseWSGIServer | MultiSocketServer:
    """Serve :func:`web_app` on ``host:port`` from a daemon thread; raises ``OSError`` when the address is taken."""
    server = waitress.create_server(
        web_app(exposition, pages, probes),
        host=host,
        port=port,
        threads=THREADS,
        backlog=BACKLOG,
        channel_timeout=IDLE_S,
        connection_limit=CONNECTIONS,
        ident="sla-stream",
        expose_tracebacks=False,
    )
    threading.Thread(target=server.run, name="sla-web", daemon=True).start()
    return server
