"""Commands packed into the Redis protocol by hiredis (C) on redis-py's asyncio connections.

Why: redis-py's asyncio connection packs every argument in Python, about
0.8 µs each on these machines; a batch of 7,000 event ids is one argument
each, so packing cost more than decoding the events. hiredis packs them in
about 0.12 µs. redis-py's own synchronous client does exactly this when
hiredis is installed (``redis.connection.HiredisRespSerializer``); its
asyncio client (redis-py 8) does not yet, so this module adds it.

``HiredisRespSerializer.pack`` itself is not reused: it converts every
argument (bytearray and memoryview to bytes) on each call, which showed in
the worker's profile; here that conversion is only the retry after hiredis
refuses one.

What: :func:`use_hiredis_packing` gives a client's connection pool a
subclass of whatever connection class the URL chose (TCP, TLS, a Unix
socket) whose ``pack_command`` is hiredis's; replies are read by hiredis
already (redis-py picks its parser when hiredis is installed). Text is
always encoded as strict UTF-8, whatever ``encoding`` the client was given
(:func:`stream.live.store.redis_client` gives none).

Example:
    >>> from redis.asyncio import Redis
    >>> client = use_hiredis_packing(Redis.from_url("redis://127.0.0.1:6379/0"))
    >>> client.connection_pool.connection_class.__name__
    'HiredisPackingConnection'
    >>> client.connection_pool.connection_class().pack_command("SET", "k", 1)
    [b'*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\n1\\r\\n']
"""

from __future__ import annotations

from typing import Any, TypeVar

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

R = TypeVar("R", Redis, RedisCluster)


class HiredisPacking:
    """Mixed into a redis-py asyncio connection class: ``pack_command`` by hiredis, as redis-py's sync client does."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command name of several words ("CLIENT SETNAME") is several arguments
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # hiredis takes no bytearray or memoryview: retried as bytes (rare; not on the hot path)
            args = tuple(bytes(arg) if isinstance(arg, bytearray | memoryview) else arg for arg in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:  # what redis-py raises for an argument it cannot encode
            raise DataError(str(error)) from None


def use_hiredis_packing(client: R) -> R:
    """Make ``client``'s new connections pack commands with hiredis; returns the client.

    A ``RedisCluster`` makes one pool a node, from its ``connection_kwargs``,
    when it first meets the node: given before its first command, the class
    there is what every node's connections are made of.
    """
    if isinstance(client, RedisCluster):
        client.connection_kwargs["connection_class"] = _packing(client.connection_kwargs["connection_class"])
    else:
        client.connection_pool.connection_class = _packing(client.connection_pool.connection_class)
    return client


def _packing(chosen: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(chosen, HiredisPacking):
        return chosen
    return type(f"HiredisPacking{chosen.__name__}", (HiredisPacking, chosen), {})
