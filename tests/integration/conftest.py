"""Fixtures for tests against the real Kafka broker (Redis's are in tests/conftest.py).

A service that does not answer FAILS the tests that need it (no skip), see
tests/services.py. Every test in this folder gets the `integration` marker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError
from services import KAFKA_BOOTSTRAP, connect_or_fail, unique_name

HERE = Path(__file__).parent
pytest.register_assert_rewrite("stream_harness", "redis_cluster")  # the harnesses of the live-stream and cluster tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return KAFKA_BOOTSTRAP


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
