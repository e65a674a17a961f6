"""Commands packed by hiredis are byte for byte what redis-py's own asyncio packer sends."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from stream.live.hiredis_packing import use_hiredis_packing


def _packers() -> tuple[Connection, Connection]:
    client = use_hiredis_packing(Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True))
    return Connection(decode_responses=True), client.connection_pool.connection_class(decode_responses=True)


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "abc", 0, "p:", "requests:0", 17, -1, "房间-id", 1_552_183_200_000, "x" * 70_000),
        ("CLIENT SETNAME", "worker"),
        (b"HGET", b"key", bytearray(b"field"), memoryview(b"more")),
        ("SET", "k", 1.5),
    ],
)
def test_the_same_bytes_as_redis_py(args: tuple) -> None:
    python, hiredis = _packers()
    assert b"".join(hiredis.pack_command(*args)) == b"".join(python.pack_command(*args))


def test_an_argument_redis_py_refuses_is_refused_the_same_way() -> None:
    _, hiredis = _packers()
    with pytest.raises(DataError):
        hiredis.pack_command("SET", "k", None)


def test_a_tls_url_keeps_its_connection_class() -> None:
    client = use_hiredis_packing(Redis.from_url("rediss://127.0.0.1:1/0"))
    assert client.connection_pool.connection_class.__name__ == "HiredisPackingSSLConnection"
    assert use_hiredis_packing(client).connection_pool.connection_class.__name__ == "HiredisPackingSSLConnection"
