"""The worker's web server: ``/metrics`` for Prometheus and the live month pages, on one address.

One small WSGI app on a thread pool of its own (the standard library's
``wsgiref`` with a thread per request), so a scrape or a page never waits on
the worker's event loop: ``/metrics`` is the worker's exposition
(:meth:`stream.live.metrics.WorkerMetrics.exposition`: the registry's
families, and the app series rendered only where they changed), every
other path goes to :class:`stream.live.pages.LivePages` (404 when it is not a page).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

from stream.live.pages import LivePages

StartResponse = Callable[..., Any]

RAW_PATH = "sla_stream.raw_path"
"""The environ key of the request's path as sent (percent-encoded)."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per request; the threads never hold the process open."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr (Prometheus scrapes every few seconds); the path as sent kept for the pages.

    ``wsgiref`` decodes ``PATH_INFO`` (as Latin-1), which makes ``%2F`` a
    ``/``; the pages split the path as sent and decode the app id on its own.
    A connection idle for :attr:`timeout` seconds is dropped, freeing its thread.
    """

    timeout = 30

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[RAW_PATH] = self.path.split("?", 1)[0]
        return environ

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        pass


def web_app(
    exposition: Callable[[], bytes], pages: LivePages
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app: ``/metrics`` from ``exposition``, the page routes from ``pages``, 404 for anything else."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics" and method in ("GET", "HEAD"):
            body = exposition()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [] if method == "HEAD" else [body]
        if path == "/favicon.ico":  # browsers ask for one; the pages have none
            start_response("204 No Content", [])
            return []
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET, HEAD")])
            return [b"only GET and HEAD\n"]
        response = pages.answer(environ.get(RAW_PATH, path), environ.get("QUERY_STRING", ""))
        if response is None:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: try / (every app's month) or /metrics\n"]
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-store"),
        ]
        start_response(response.status, headers)
        return [response.body]

    return app


def serve(host: str, port: int, exposition: Callable[[], bytes], pages: LivePages) -> WSGIServer:
    """Serve :func:`web_app` on ``host:port`` from a daemon thread; raises ``OSError`` when the address is taken."""
    server_class = type(
        "_Server", (_ThreadingServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET}
    )
    server = make_server(host, port, web_app(exposition, pages), server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="sla-web", daemon=True).start()
    return server
