"""Exemptions in the live stream: followed from the topic into Redis, and the slots they touch judged again.

Two sources give exemptions: the config file's ``[[exemptions]]`` (read at
start) and the compacted exemptions topic, keyed by exemption id, whose
latest record per key is the exemption (a null value withdraws it). The
record's shape is :func:`stream.formats.exemption_from_json`'s; Redis keeps
the records of the topic so every tick of the closer sees them all
(:func:`current_exemptions`).

An exemption changes the verdict of slots that are already closed, so each
change marks the unavailable slots under the old and the new window dirty:
the closer judges them again and publishes a new revision when the verdict
moved (:func:`judge_windows_again`). Slots leave an exemption as surely as
they enter one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from stream.config import Settings
from stream.events import Rejected
from stream.formats import DeadLetter, InvalidExemption, decode_exemption
from stream.live.health import Health
from stream.live.ingest import SendDeadLetter
from stream.live.store import Store
from stream.sla.exemptions import Exemption, in_lookup_order
from stream.sla.slots import SLOT_MS

log = logging.getLogger(__name__)


async def current_exemptions(store: Store, settings: Settings) -> tuple[Exemption, ...]:
    """The config file's exemptions followed by the topic's (by exemption id), in the order a slot looks for one."""
    return in_lookup_order(settings.exemptions, await store.exemptions())


async def judge_windows_again(store: Store, exemptions: Iterable[Exemption]) -> None:
    """Mark every unavailable slot the given exemption windows touch for judging again."""
    apps = await store.apps()
    for exemption in exemptions:
        for app_id in [exemption.app_id] if exemption.app_id else sorted(apps):
            slots = await store.unavailable_slots(app_id, exemption.start_ms - SLOT_MS + 1, exemption.end_ms)
            await store.mark_dirty((app_id, slot_ms) for slot_ms in slots)


class ExemptionFollower:
    """Applies one exemptions-topic record at a time to Redis; an invalid record becomes a dead letter.

    Every Redis step waits out an outage (:meth:`Health.until_redis_answers`):
    a record is applied whole before the next is read.
    """

    def __init__(self, store: Store, health: Health, send_dead_letter: SendDeadLetter) -> None:
        self._store = store
        self._health = health
        self._send_dead_letter = send_dead_letter

    async def follow(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Record exemption ``key`` (a null ``value`` withdraws it), then have its old and new slots judged again."""
        store, health = self._store, self._health
        exemption_id = (key or b"").decode("utf-8", errors="replace")
        previous = await health.until_redis_answers(lambda: store.exemption(exemption_id))
        touched = [previous] if previous else []
        if value is None:
            await health.until_redis_answers(lambda: store.put_exemption(exemption_id, None))
        else:
            try:
                record = decode_exemption(value)
            except InvalidExemption as error:
                log.info("exemption %r refused (%s): dead-lettered", exemption_id, error)
                await self._send_dead_letter(DeadLetter(topic, partition, offset, Rejected(str(error), value)))
                return
            exemption = await health.until_redis_answers(lambda: store.put_exemption(exemption_id, record))
            touched.append(exemption)
        await health.until_redis_answers(lambda: judge_windows_again(store, touched))

    async def judge_config_windows_again(self, settings: Settings) -> None:
        """Judge the config file's exemption windows again: they may have been added since their slots closed."""
        await self._health.until_redis_answers(lambda: judge_windows_again(self._store, settings.exemptions))
