"""Fixtures every tier that touches Redis shares: the server's URL, a client, a key prefix of its own.

The component tests (tests/component) need Redis alone; the integration
tests (tests/integration) need Kafka too, whose fixtures live in their folder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from services import REDIS_URL, connect_or_fail, unique_name


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10)
    connect_or_fail(client.ping, redis.RedisError, "Redis server", redis_url, "REDIS_URL")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = unique_name("sla-stream-test") + ":"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


collect_ignore_glob = ["*conftest.py"]
"""No conftest (here or below) is collected for doctests: --doctest-modules would import each a second time
under the one module name ``conftest``, which another folder's conftest may hold by then (pytest 9 fails on
that). They are still loaded as conftests."""
