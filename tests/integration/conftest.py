"""Fixtures for tests against the real Kafka broker and Redis server.

Addresses come from KAFKA_BOOTSTRAP (default 127.0.0.1:9092) and REDIS_URL
(default redis://127.0.0.1:6379/0), the services `make up` starts. A service
that does not answer FAILS the tests that need it (no skip): CI must really
exercise them. Every test in this folder gets the `integration` marker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

HERE = Path(__file__).parent
pytest.register_assert_rewrite("stream_harness")  # the live-stream tests' harness (test_stream_*.py)
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def connect_or_fail(
    connect: Callable[[], T],
    errors: type[Exception],
    service: str,
    address: str,
    env_var: str,
) -> T:
    """connect(), or fail (never skip) the test in one line saying how to fix it."""
    try:
        return connect()
    except errors as exc:
        error = exc
    pytest.fail(  # outside the except block: no chained traceback
        f"{service} at {address} is not reachable ({error}); "
        f"start it with `make up` (or run `make test`), or point {env_var} at a running one",
        pytrace=False,
    )


def unique_name(prefix: str) -> str:
    """A name no other test run uses (topics, key prefixes)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = connect_or_fail(
        lambda: KafkaAdminClient(
            bootstrap_servers=kafka_bootstrap,
            client_id="sla-stream-tests",
            bootstrap_timeout_ms=10_000,
            request_timeout_ms=10_000,
        ),
        KafkaError,
        "Kafka broker",
        kafka_bootstrap,
        "KAFKA_BOOTSTRAP",
    )
    yield admin
    admin.close()


@pytest.fixture
def make_topic(kafka_admin: KafkaAdminClient) -> Iterator[Callable[..., str]]:
    """Factory: create a uniquely named topic; all are deleted afterwards."""
    created: list[str] = []

    def make(prefix: str = "smoke", partitions: int = 3) -> str:
        name = unique_name(prefix)
        kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            timeout_ms=10_000,
            wait_for_metadata=True,
        )
        created.append(name)
        return name

    yield make
    if created:
        kafka_admin.delete_topics(created, timeout_ms=10_000)


@pytest.fixture
def consumer_group(kafka_admin: KafkaAdminClient) -> Iterator[str]:
    """A unique consumer group id; the group is deleted afterwards."""
    group = unique_name("smoke-group")
    yield group
    assert kafka_admin.delete_groups([group]) == {group: "OK"}


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
