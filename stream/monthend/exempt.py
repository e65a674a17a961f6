"""``sla-stream exempt add|list|remove``: exemptions on the compacted exemptions topic, from the command line.

The topic is keyed by exemption id; its latest record per key is the
exemption, and a null value (a tombstone) withdraws it. The live workers
follow the topic and judge the slots under the old and new windows again
(:mod:`stream.live.exemptions`), replays read it whole: an addition or a
removal reaches every figure, retroactively.

``add`` refuses, in one line, what would be a mistake on the topic: a
window that ends before it starts, an unknown clause, an unknown app, a
window longer than ``[exempt] max_window_days``, or one starting before the
topics' retention horizon (a replay could no longer apply it). A time
without a UTC offset is read in the SLA's time zone (``[sla] timezone``), and
the record is written with the offset, as the topic's schema requires.

Example (the record ``add`` writes):
    >>> from zoneinfo import ZoneInfo
    >>> record = exemption_record(
    ...     NewExemption("1400000001", 1_798_732_800_000, 1_798_736_400_000, "announced-maintenance", "upgrade"),
    ...     ZoneInfo("Asia/Shanghai"))
    >>> record["start"], record["end"], record["clause"]
    ('2027-01-01T00:00:00+08:00', '2027-01-01T01:00:00+08:00', 'announced-maintenance')
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.formats import EXEMPTION_SCHEMA, exemption_from_json
from stream.kafka_security import aiokafka_options, redact
from stream.live.recount import exemptions_in_force, open_consumer, read_exemptions_topic
from stream.live.store import Store, redis_client
from stream.live.worker import WorkerStartError, partition_counts
from stream.monthend.apps import UnknownApp, check_apps_known
from stream.sla.exemptions import CLAUSES, Exemption, check_note, exemption_for, in_lookup_order
from stream.sla.slots import SLOT_MS, instant_ms, local_time


class ExemptError(Exception):
    """Why an exemption command refused or failed; printed as one line."""


@dataclass(frozen=True)
class NewExemption:
    app_id: str | None
    start_ms: int
    end_ms: int
    clause: str
    note: str


@dataclass(frozen=True)
class ListedExemption:
    """An exemption in force on the topic, and how many live slots it exempts (None: no live state to ask)."""

    exemption_id: str
    record: Mapping[str, Any]
    exemption: Exemption
    slots_exempted: int | None


def parse_new_exemption(
    settings: Settings, app_id: str | None, start: str, end: str, clause: str, note: str, now_ms: int
) -> NewExemption:
    """The exemption ``add`` was asked for, or :class:`ExemptError` naming the first thing wrong with it."""
    tz = settings.policy.timezone
    if clause not in CLAUSES:
        raise ExemptError(f"unknown clause {clause!r}; the agreement's grounds are: {', '.join(CLAUSES)}")
    start_ms, end_ms = _time("--start", start, tz), _time("--end", end, tz)
    if end_ms <= start_ms:
        raise ExemptError(f"--end {_rfc3339(end_ms, tz)} is not after --start {_rfc3339(start_ms, tz)}")
    longest = settings.exemption_max_ms
    if end_ms - start_ms > longest:
        raise ExemptError(
            f"the window is {(end_ms - start_ms) / 86_400_000:.2f} days long; at most {longest // 86_400_000} "
            "days are allowed ([exempt] max_window_days): record a longer one as several exemptions"
        )
    horizon = (now_ms - settings.retention_ms) // 60_000 * 60_000
    if start_ms < horizon:
        raise ExemptError(
            f"--start {_rfc3339(start_ms, tz)} is before the topics' retention horizon {_rfc3339(horizon, tz)} "
            f"({settings.retention_ms // 86_400_000} days): its slots can no longer be replayed"
        )
    if app_id is not None and not app_id:
        raise ExemptError("--app cannot be empty (leave it out, with --all-apps, to exempt every app)")
    try:
        check_note(note)
    except ValueError as error:
        raise ExemptError(f"--note: {error}") from None
    return NewExemption(app_id, start_ms, end_ms, clause, note)


def exemption_record(exemption: NewExemption, tz: ZoneInfo) -> dict[str, Any]:
    """The topic's record for ``exemption``: RFC 3339 times in the SLA's zone (docs/schemas/exemption.schema.json)."""
    record = {
        "schema": EXEMPTION_SCHEMA,
        "app_id": exemption.app_id,
        "start": _rfc3339(exemption.start_ms, tz),
        "end": _rfc3339(exemption.end_ms, tz),
        "clause": exemption.clause,
        "note": exemption.note,
    }
    exemption_from_json(record)  # the same check the workers make: never write what they would dead-letter
    return record


def new_exemption_id(exemption: NewExemption, tz: ZoneInfo) -> str:
    """``ex-YYYYMMDD-xxxxxx``: the window's first day, and six random hex digits."""
    return f"ex-{local_time(exemption.start_ms, tz):%Y%m%d}-{secrets.token_hex(3)}"


async def add(settings: Settings, exemption: NewExemption) -> str:
    """Write ``exemption`` to the topic under a new id, once Kafka acknowledged it; the id."""
    _topic_partitions(settings)
    if exemption.app_id is not None:
        await _check_app(settings, exemption.app_id)
    tz = settings.policy.timezone
    exemption_id = new_exemption_id(exemption, tz)
    value = json.dumps(exemption_record(exemption, tz), ensure_ascii=False).encode("utf-8")
    await _send(settings, exemption_id, value)
    return exemption_id


async def remove(settings: Settings, exemption_id: str) -> Exemption:
    """Withdraw exemption ``exemption_id`` with a tombstone; the exemption withdrawn."""
    active = {listed.exemption_id: listed for listed in await _in_force(settings)}
    if exemption_id not in active:
        raise ExemptError(f"no exemption {exemption_id!r} is in force (sla-stream exempt list shows them)")
    await _send(settings, exemption_id, None)
    return active[exemption_id].exemption


async def in_force(settings: Settings) -> list[ListedExemption]:
    """The exemptions in force on the topic, by start, with how many slots each exempts in the live state."""
    listed = await _in_force(settings)
    try:
        return await _with_slot_counts(settings, listed)
    except (RedisError, OSError):
        return listed  # no live state to ask: the counts stay unknown


async def _in_force(settings: Settings) -> list[ListedExemption]:
    """The topic's exemptions in force, by start (invalid records were dead-lettered by the workers: never in force)."""
    partitions = _topic_partitions(settings)
    try:
        consumer = await open_consumer(settings, aiokafka_options(settings.kafka_security))
        try:
            latest = await read_exemptions_topic(consumer, settings, partitions)
        finally:
            await consumer.stop()
    except KafkaError as error:
        raise ExemptError(redact(f"Kafka at {settings.kafka_bootstrap} failed: {error}")) from None
    listed = [
        ListedExemption(exemption_id, record, exemption_from_json(record), None)
        for exemption_id, record in exemptions_in_force(latest).items()
    ]
    return sorted(listed, key=lambda e: (e.exemption.start_ms, e.exemption_id))


async def _with_slot_counts(settings: Settings, listed: Sequence[ListedExemption]) -> list[ListedExemption]:
    """Each exemption's count of live slots that are unavailable by their counts and exempted by it (first match)."""
    redis = redis_client(settings.redis_url, socket_timeout_s=5.0, cluster=settings.redis_cluster)
    try:
        store = Store.of(redis, settings)
        if await store.meta() is None:
            return list(listed)
        in_order = in_lookup_order(settings.exemptions, {e.exemption_id: e.exemption for e in listed})
        apps = sorted(await store.apps())
        counted = []
        for item in listed:
            e = item.exemption
            exempted = 0
            for app_id in [e.app_id] if e.app_id else apps:
                for slot_ms in await store.unavailable_slots(app_id, e.start_ms - SLOT_MS + 1, e.end_ms):
                    exempted += exemption_for(app_id, slot_ms, in_order) is e
            counted.append(ListedExemption(item.exemption_id, item.record, e, exempted))
        return counted
    finally:
        await redis.aclose()


async def _check_app(settings: Settings, app_id: str) -> None:
    redis = redis_client(settings.redis_url, socket_timeout_s=5.0, cluster=settings.redis_cluster)
    try:
        await check_apps_known(settings, Store.of(redis, settings), [app_id])
    except UnknownApp as error:
        raise ExemptError(str(error)) from None
    except (RedisError, OSError) as error:
        raise ExemptError(redact(f"Redis at {settings.redis_url} is not answering: {error}")) from None
    finally:
        await redis.aclose()


async def _send(settings: Settings, key: str, value: bytes | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        **aiokafka_options(settings.kafka_security),
    )
    try:
        await producer.start()
        await producer.send_and_wait(settings.topics.exemptions, key=key.encode("utf-8"), value=value)
    except KafkaError as error:
        raise ExemptError(redact(f"Kafka at {settings.kafka_bootstrap} did not take the record: {error}")) from None
    finally:
        await producer.stop()


def _topic_partitions(settings: Settings) -> int:
    """The exemptions topic's partition count; one line naming the topic or Kafka when it cannot be had."""
    try:
        return partition_counts(settings, [settings.topics.exemptions])[settings.topics.exemptions]
    except WorkerStartError as error:
        raise ExemptError(str(error)) from None


def _time(option: str, text: str, tz: ZoneInfo) -> int:
    try:
        return instant_ms(text, tz)
    except ValueError as error:
        raise ExemptError(f"{option}: {error}") from None


def _rfc3339(ms: int, tz: ZoneInfo) -> str:
    return local_time(ms, tz).isoformat(timespec="seconds" if ms % 1000 == 0 else "milliseconds")


def to_text(listed: Sequence[ListedExemption], tz: ZoneInfo) -> str:
    """A table of the exemptions in force, for people."""
    if not listed:
        return "no exemptions in force"
    header = f"{'id':<20} {'app':<12} {'start':<25} {'end':<25} {'slots':>5}  clause: note"
    lines = [header, "-" * len(header)]
    for item in listed:
        e = item.exemption
        slots = "?" if item.slots_exempted is None else str(item.slots_exempted)
        note = f": {e.note}" if e.note else ""
        lines.append(
            f"{item.exemption_id:<20} {e.app_id or 'all apps':<12} {_rfc3339(e.start_ms, tz):<25} "
            f"{_rfc3339(e.end_ms, tz):<25} {slots:>5}  {e.clause}{note}"
        )
    return "\n".join(lines)
