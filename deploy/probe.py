#!/usr/bin/env python3
"""Does a Kafka broker or a Redis server answer at an address? (stdlib only)

    python3 deploy/probe.py kafka 127.0.0.1:9092
    python3 deploy/probe.py redis redis://127.0.0.1:6379/0

Exit 0 when it answers as the named service, 1 otherwise (one line on stderr
saying why). No virtualenv needed, so deploy/*.sh can use it on a fresh
machine before `make venv`, and tell "our service is up" apart from
"something else holds the port".

Kafka: sends a Metadata v4 request (the oldest version Kafka 4 still serves)
and wants at least one broker back: that is what a client needs before it can
produce. Kafka only accepts client connections once the broker has finished
starting, so this is a real readiness check, not just an open port.
Redis: sends AUTH (when the URL has a password) and PING, wants +PONG.
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
from urllib.parse import unquote, urlsplit

TIMEOUT_S = 3.0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return buf


def kafka_brokers(bootstrap: str) -> int:
    """Number of brokers in the Metadata response of the first bootstrap host."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    client_id = b"sla-stream-probe"
    correlation_id = 7
    # Request header v1 (api key 3 = Metadata, version 4, correlation id,
    # client id), then the body: all topics (-1), no auto-creation.
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body = header + struct.pack(">i?", -1, False)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    got_id, _throttle, n_brokers = struct.unpack(">iii", resp[:12])
    if got_id != correlation_id:
        raise ValueError(f"not a Kafka answer (correlation id {got_id})")
    return n_brokers


def redis_ping(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as raw:
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if parts.scheme == "rediss" else raw
        reader = sock.makefile("rb")
        if parts.password is not None:
            auth = [unquote(parts.password)]
            if parts.username:
                auth.insert(0, unquote(parts.username))
            sock.sendall(_resp_command("AUTH", *auth))
            line = reader.readline().strip().decode(errors="replace")
            if line != "+OK":
                raise ValueError(f"AUTH refused: {line}")
        sock.sendall(_resp_command("PING"))
        return reader.readline().strip().decode(errors="replace")


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("kafka", "redis"):
        print("usage: probe.py kafka HOST:PORT | probe.py redis URL", file=sys.stderr)
        return 2
    kind, address = argv[1], argv[2]
    try:
        if kind == "kafka":
            n = kafka_brokers(address)
            if n < 1:
                raise ValueError("metadata lists no broker yet")
        else:
            answer = redis_ping(address)
            if answer != "+PONG":
                raise ValueError(f"PING answered {answer!r}")
    except (OSError, ValueError, struct.error) as exc:
        print(f"probe: {kind} at {address}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
