"""The worker's web server on the real Redis: probes, HEAD, unknown apps, bursts and idle connections.

The rows of issue 20's fault table that concern the web face: a burst of
connections accepted without retries, ``HEAD`` without a body, an unknown
app refused before any page is built (so a storm of them cannot hold the
known ones up), an idle connection dropped without a traceback, and the
probes' answers in each worker state.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from live_kit import START_MS, LiveKit

from stream.config import WebAccess
from stream.live import page_builds, web
from stream.live.health import STATES, WorkerState
from stream.live.pages import LivePages
from stream.live.probes import Probes
from stream.sla.slots import SLOT_MS

APP = "1400000001"


class Server:
    """A web server of the test's own, with a worker state it sets."""

    def __init__(self, kit: LiveKit, access: WebAccess = web.OPEN) -> None:
        self.state: WorkerState = "counting"
        self.probes = Probes(lambda: self.state)
        self.probes.beat()
        self.pages = LivePages(kit.settings, lambda: None, kit.clock)
        self.server = web.serve("127.0.0.1", 0, lambda: b"# metrics\n", self.pages, self.probes, access)
        self.port = self.server.effective_port

    def request(
        self, method: str, path: str, authorization: str | None = None
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers={} if authorization is None else {"Authorization": authorization})
            response = connection.getresponse()
            return response.status, response.read(), response.headers  # names compared case-insensitively
        finally:
            connection.close()


@pytest.fixture
def served(live, request: pytest.FixtureRequest) -> Iterator[tuple[Server, LiveKit]]:  # type: ignore[no-untyped-def]
    holder: dict[str, tuple[Server, LiveKit]] = {}

    async def steps(kit: LiveKit) -> None:
        await kit.count("request", [kit.request(0, f"r-{i}", APP, START_MS + i) for i in range(5)])
        await kit.move_stream_time(START_MS + SLOT_MS)
        await kit.tick()
        holder["it"] = (Server(kit, getattr(request, "param", web.OPEN)), kit)

    live(steps)
    server, kit = holder["it"]
    yield server, kit
    server.server.close()
    server.pages.builders.close()


TOKENS = WebAccess(pages_token="pages-s3cret", metrics_token="metrics-s3cret")


@pytest.mark.parametrize("served", [TOKENS], indirect=True)
def test_with_tokens_set_the_pages_and_metrics_ask_for_their_own_and_the_probes_for_none(
    served: tuple[Server, LiveKit],
) -> None:
    server, _ = served
    page = f"/apps/{APP}/months/2026-11.json"
    for path in ("/", page, "/metrics"):
        status, body, headers = server.request("GET", path)
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="sla-stream"', path
        assert b"s3cret" not in body
        assert server.request("GET", path, "Bearer wrong")[0] == 401
    assert server.request("GET", page, "Bearer pages-s3cret")[0] == 200
    as_browser = "Basic " + base64.b64encode(b"anyone:pages-s3cret").decode()
    assert server.request("GET", "/", as_browser)[0] == 200
    assert server.request("GET", "/metrics", "Bearer pages-s3cret")[0] == 401, "each its own token"
    assert server.request("GET", "/metrics", "Bearer metrics-s3cret")[0] == 200
    assert server.request("GET", "/readyz")[0] == server.request("GET", "/healthz")[0] == 200


def test_probes_answer_in_every_state(served: tuple[Server, LiveKit]) -> None:
    server, _ = served
    for state in STATES:
        server.state = state
        status, body, _ = server.request("GET", "/readyz")
        assert (status == 200) == (state == "counting"), (state, body)
        assert state.encode() in body
        assert server.request("GET", "/healthz")[0] == 200  # alive whatever the state: a restart cures none
    server.probes._last_beat = time.monotonic() - 60  # the loop stuck for a minute
    status, body, _ = server.request("GET", "/healthz")
    assert status == 503 and b"the event loop last ran 60 s ago" in body
    assert server.request("GET", "/readyz")[0] == 503


def test_head_answers_the_headers_without_the_body(served: tuple[Server, LiveKit]) -> None:
    server, _ = served
    path = f"/apps/{APP}/months/2026-11"
    got, body, headers = server.request("GET", path)
    assert got == 200 and len(body) > 1000
    head, head_body, head_headers = server.request("HEAD", path)
    assert head == 200 and head_body == b""
    assert head_headers["Content-Length"] == headers["Content-Length"] == str(len(body))
    status, body, _ = server.request("HEAD", "/metrics")
    assert status == 200 and body == b""
    status, _, headers = server.request("POST", "/metrics")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_an_unknown_app_is_a_404_even_while_every_build_slot_is_taken(served: tuple[Server, LiveKit]) -> None:
    server, _ = served
    taken = [server.pages.builders._slots.acquire(timeout=1) for _ in range(page_builds.PAGE_BUILDS)]
    assert all(taken)
    try:
        started = time.monotonic()
        status, body, _ = server.request("GET", "/apps/1499999999/months/2026-11")
        assert status == 404 and b"no terms on record and no traffic counted" in body
        assert time.monotonic() - started < 2, "answered without waiting for a build slot"
    finally:
        for _ in taken:
            server.pages.builders._slots.release()


def test_a_burst_of_500_connections_is_accepted_at_once(served: tuple[Server, LiveKit]) -> None:
    """Each connect completes well under the 1 s a dropped SYN costs in retries (wsgiref's backlog was 5)."""
    server, _ = served

    async def connect() -> tuple[float, asyncio.StreamWriter]:
        started = time.monotonic()
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 10)
        return time.monotonic() - started, writer

    async def burst() -> list[float]:
        opened = await asyncio.gather(*(connect() for _ in range(500)))
        for _, writer in opened:
            writer.close()
        return [took for took, _ in opened]

    took = asyncio.run(burst())
    assert len(took) == 500
    assert max(took) < 0.9, f"a connect took {max(took):.2f} s: dropped and retried"
    assert server.request("GET", "/metrics")[0] == 200  # and the server still answers


def test_an_idle_connection_is_dropped_quietly(
    served: tuple[Server, LiveKit], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    server.server.close()
    monkeypatch.setattr(web, "IDLE_S", 1)
    server.server = web.serve("127.0.0.1", 0, lambda: b"", server.pages, server.probes)
    caplog.set_level(logging.DEBUG)
    idle = [socket.create_connection(("127.0.0.1", server.server.effective_port), timeout=10) for _ in range(20)]
    closed = sum(1 for sock in idle if _closed_by_peer(sock))  # each waits up to 10 s for the server to close it
    for sock in idle:
        sock.close()
    assert closed == 20
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except OSError:
        return True
