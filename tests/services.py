"""Reaching the real services the tests need: fail (never skip) in one line when one does not answer.

Addresses come from KAFKA_BOOTSTRAP (default 127.0.0.1:9092) and REDIS_URL
(default redis://127.0.0.1:6379/0), the services `make up` starts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def connect_or_fail(
    connect: Callable[[], T],
    errors: type[Exception] | tuple[type[Exception], ...],
    service: str,
    address: str,
    env_var: str,
) -> T:
    """connect(), or fail (never skip) the test in one line saying how to fix it: CI must really exercise them."""
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
