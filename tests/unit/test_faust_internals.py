"""The faust-streaming internals the worker relies on (stream/live/faust_batches.py, faust_positions.py,
faust_isolation.py), pinned."""

from __future__ import annotations

import asyncio
import inspect

import faust
import pytest
from aiokafka import ConsumerRecord
from faust.transport.consumer import Consumer
from faust.types import TP

from stream.config import load_settings
from stream.live import faust_batches, faust_positions
from stream.live.app import create_app


@pytest.fixture
def app_and_topics() -> tuple[faust.App, str, str]:
    settings = load_settings(environ={})
    app = create_app(settings, {settings.topics.requests: 4, settings.topics.successes: 4})
    return app, settings.topics.requests, settings.topics.exemptions


def test_every_fetched_record_reaches_faust_through_getmany() -> None:
    """If Faust fetched records another way, the batch path would see none of them (the worker would stall): fail."""
    assert "records = await self._getmany(" in inspect.getsource(Consumer._wait_next_records)
    assert "records, active_partitions = await self._wait_next_records(timeout)" in inspect.getsource(Consumer.getmany)
    assert "ait = cast(AsyncIterator, getmany(timeout=1.0))" in inspect.getsource(Consumer._drain_messages)
    assert faust.__version__ == faust_batches.WRITTEN_FOR


def _record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, None, b"{}", None, 0, 2, [])


def _batch_app(rebalance_during_fetch: bool = False) -> tuple[faust.App, list, list]:
    """An app whose consumer "fetches" a fixed map (no broker), with the batch path installed over it."""
    requests, successes = "requests", "successes"
    app = faust.App("batches-test", broker="kafka://127.0.0.1:1")
    fetched = {
        TP(requests, 0): [_record(requests, 0, 5), _record(requests, 0, 6)],
        TP("exemptions", 0): [_record("exemptions", 0, 1)],
        TP(successes, 1): [_record(successes, 1, 9)],
    }
    taken: list = []
    dropped: list = []

    async def fetch(active_partitions: object, timeout: float) -> dict:
        if rebalance_during_fetch:  # a rebalance completed while the fetch waited: a new generation
            app.consumer_generation_id += 1
        return dict(fetched)

    async def take(batches: faust_batches.Batches) -> None:
        taken.append({(tp.topic, tp.partition): [r.offset for r in batch] for tp, batch in batches.items()})

    app.consumer._getmany = fetch  # the broker-facing step, as aiokafka's fetcher would return it
    faust_batches.install(app, [requests, successes], take, lambda tps: dropped.append(sorted(tps)))
    return app, taken, dropped


def test_input_batches_go_to_the_counter_whole_and_the_rest_to_faust() -> None:
    app, taken, dropped = _batch_app()
    rest = asyncio.run(app.consumer._getmany(None, 1.0))
    assert taken == [{("requests", 0): [5, 6], ("successes", 1): [9]}]
    assert list(rest) == [TP("exemptions", 0)] and dropped == []
    registered = {t.topics[0]: t.acks for t in app.topics if t.topics[0] in ("requests", "successes")}
    assert registered == {"requests": False, "successes": False}  # subscribed, without acks or an agent


def test_a_batch_fetched_while_a_rebalance_stopped_the_flow_is_dropped_not_counted() -> None:
    app, taken, dropped = _batch_app()
    app.consumer.stop_flow()
    asyncio.run(app.consumer._getmany(None, 1.0))
    assert taken == [] and dropped == [[TP("requests", 0), TP("successes", 1)]]


def test_a_batch_fetched_across_a_change_of_generation_is_dropped_not_counted() -> None:
    app, taken, dropped = _batch_app(rebalance_during_fetch=True)
    asyncio.run(app.consumer._getmany(None, 1.0))
    assert taken == [] and dropped == [[TP("requests", 0), TP("successes", 1)]]


def test_another_faust_version_stops_the_batch_path(monkeypatch) -> None:
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_positions.FaustVersionError, match="batch path"):
        _batch_app()


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
    faust_positions.install(app, after_seek)
    asyncio.run(app.consumer.perform_seek())
    assert calls == ["faust seeks to committed offsets", "worker seeks to Redis's offsets"]


def test_another_faust_version_stops_the_worker(app_and_topics, monkeypatch) -> None:
    app, requests, _ = app_and_topics
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_positions.FaustVersionError, match="0.16.0 is installed"):
        faust_positions.install(app, no_op)


def test_the_worker_consumer_reads_committed_records_only(app_and_topics) -> None:
    """Built as Faust builds it (no broker contacted before start), then set to read_committed."""
    app, _, _ = app_and_topics

    async def build() -> str:
        consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)
        return consumer._isolation_level

    assert asyncio.run(build()) == "read_committed"
