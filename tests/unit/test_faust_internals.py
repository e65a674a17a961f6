"""The faust-streaming internals the worker relies on (stream/live/faust_positions.py, faust_isolation.py), pinned."""

from __future__ import annotations

import asyncio
import inspect

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from stream.config import load_settings
from stream.live import faust_positions
from stream.live.app import create_app


@pytest.fixture
def app_and_topics() -> tuple[faust.App, str, str]:
    settings = load_settings(environ={})
    app = create_app(settings, {settings.topics.requests: 4, settings.topics.successes: 4})
    return app, settings.topics.requests, settings.topics.exemptions


def test_the_drain_loop_reads_the_mapping_this_module_replaces() -> None:
    """If Faust stops reading ``_read_offset`` this way, the patch would be silently useless: fail here."""
    source = inspect.getsource(Consumer._drain_messages)
    assert "get_read_offset = self._read_offset.__getitem__" in source
    assert "if r_offset is None or offset >= r_offset:" in source
    assert faust.__version__ == faust_positions.WRITTEN_FOR


def test_input_partitions_have_no_read_offset_and_others_keep_theirs(app_and_topics) -> None:
    app, requests, exemptions = app_and_topics
    offsets = app.consumer._read_offset
    assert isinstance(offsets, faust_positions.ReadOffsetsSkippingTopics)
    offsets[TP(requests, 1)] = 500  # what the drain loop does after handing on a record
    assert offsets[TP(requests, 1)] is None and TP(requests, 1) not in offsets
    del offsets[TP(requests, 1)]  # what Faust's seek_wait does for offset 0: no KeyError
    offsets[TP(exemptions, 0)] = 7
    assert offsets[TP(exemptions, 0)] == 7 and TP(exemptions, 0) in offsets
    assert offsets.pop(TP(requests, 2), None) is None


async def no_op() -> None:
    """An ``after_seek`` that does nothing."""


def test_faust_seeks_are_followed_by_after_seek() -> None:
    """Faust's own perform_seek runs first (its seek to the committed offsets), then the worker's positioning."""
    app = faust.App("positions-test", broker="kafka://127.0.0.1:1")
    calls: list[str] = []

    async def seek_to_committed() -> dict:
        calls.append("faust seeks to committed offsets")
        return {}

    async def after_seek() -> None:
        calls.append("worker seeks to Redis's offsets")

    app.consumer.seek_to_committed = seek_to_committed  # the broker-facing step Faust's perform_seek awaits
    faust_positions.install(app, ["requests"], after_seek)
    asyncio.run(app.consumer.perform_seek())
    assert calls == ["faust seeks to committed offsets", "worker seeks to Redis's offsets"]


def test_another_faust_version_stops_the_worker(app_and_topics, monkeypatch) -> None:
    app, requests, _ = app_and_topics
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_positions.FaustVersionError, match="0.16.0 is installed"):
        faust_positions.install(app, [requests], no_op)


def test_the_worker_consumer_reads_committed_records_only(app_and_topics) -> None:
    """Built as Faust builds it (no broker contacted before start), then set to read_committed."""
    app, _, _ = app_and_topics

    async def build() -> str:
        consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)
        return consumer._isolation_level

    assert asyncio.run(build()) == "read_committed"
