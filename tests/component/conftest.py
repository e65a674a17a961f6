"""Fixtures for the component tests: the live path's parts against the real Redis alone (no Kafka, no Faust).

Redis comes from REDIS_URL (default redis://127.0.0.1:6379/0), as `make up`
starts it; a Redis that does not answer fails the tests (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from live_kit import LiveKit, run_kit

Live = Callable[..., None]


@pytest.fixture(params=[1, 5], ids=["1-shard", "5-shards"])
def live(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str, redis_client: redis.Redis) -> Live:
    """``live(steps, **settings)``: run ``async steps(kit)`` on a fresh namespace's :class:`LiveKit`, once with the
    state in one shard and once in five (the test apps fall in shards 3, 0 and 2; all on the one Redis: on a
    cluster only where the shards live differs)."""

    def run(steps: Callable[[LiveKit], Awaitable[None]], **stream: Any) -> None:
        run_kit(redis_url, redis_prefix, steps, **({"redis_shards": request.param} | stream))

    return run
