"""The worker's state says each change once: an outage of refused writes (maxmemory) does not flap on reads."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from stream.live.health import QUIET_S, Health

OOM = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "stream.live.health"]


def test_refused_writes_stay_paused_until_none_is_refused_for_a_while(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    health = Health("redis://127.0.0.1:6379/0", clock=clock)
    for second in range(30):  # 30 s at maxmemory: the write fails each second, reads go on succeeding
        clock.now = float(second)
        health.redis_failed(OOM)
        health.redis_answered()  # a read, or a write that fit, between refusals
        assert health.state == "paused"
    clock.now = 29 + QUIET_S - 0.1
    health.redis_answered()
    assert health.state == "paused"
    clock.now = 29 + QUIET_S + 0.5
    health.redis_answered()
    assert health.state == "counting"
    said = lines(caplog)
    assert len(said) == 2, said
    assert "refuses writes" in said[0] and "maxmemory" in said[0]
    assert f"answers again after {29 + QUIET_S + 0.5:.1f} s" in said[1]


def test_an_unreachable_redis_ends_with_any_answer(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health("redis://x", clock=clock)
    health.redis_failed(RedisConnectionError("Connection refused"))
    health.redis_failed(RedisConnectionError("Connection refused"))
    clock.now = 2.0
    health.redis_answered()
    assert health.state == "counting"
    said = lines(caplog)
    assert len(said) == 2 and "is unavailable" in said[0] and "answers again after 2.0 s" in said[1]


def test_a_step_refused_then_accepted_is_retried_until_it_applies() -> None:
    health = Health("redis://x", clock=Clock())
    outcomes = iter([OOM, OOM, "applied"])

    async def write() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert asyncio.run(health.until_redis_answers(write)) == "applied"
    assert health.state == "paused"  # until no write is refused for QUIET_S
