"""Exemptions followed from the topic on the real Redis: a closed slot enters and leaves an exemption.

Records are handed to :class:`stream.live.exemptions.ExemptionFollower` as the
agent would; the closer then publishes the revisions the change caused.
"""

from __future__ import annotations

import json
from datetime import date

from live_kit import START_MS, LiveKit

from stream.config import load_settings
from stream.sla.slots import SLOT_MS, local_time

APP, OTHER = "1400000001", "1400000002"
SLOT = START_MS


async def close_a_bad_slot(kit: LiveKit) -> None:
    """Both apps: one slot at 50%, closed (revision 1)."""
    for app_id in (APP, OTHER):
        ids = [f"r-{app_id}-{i}" for i in range(10)]
        await kit.count("request", [kit.request(0, ids[i], app_id, SLOT + i) for i in range(10)])
        await kit.count(
            "success", [kit.success(0, f"s-{app_id}-{i}", ids[i], app_id, SLOT + i, SLOT + i) for i in range(5)]
        )
    await kit.move_stream_time(SLOT + 2 * SLOT_MS)
    await kit.tick()


def exemption(app_id: str | None, clause: str = "announced-maintenance") -> bytes:
    tz = load_settings().policy.timezone
    start, end = local_time(SLOT + 60_000, tz), local_time(SLOT + 120_000, tz)  # one minute inside the slot
    return json.dumps({"app_id": app_id, "start": start.isoformat(), "end": end.isoformat(), "clause": clause}).encode()


def latest(kit: LiveKit, app_id: str) -> dict:
    return [m for m in kit.verdicts() if m["app_id"] == app_id][-1]


def test_an_exemption_then_its_withdrawal_make_two_revisions(live) -> None:
    async def steps(kit: LiveKit) -> None:
        await close_a_bad_slot(kit)
        assert (latest(kit, APP)["revision"], latest(kit, APP)["exempt"]) == (1, False)

        await kit.exemptions.follow("exemptions", 0, 0, b"maint-1", exemption(APP))
        await kit.tick()
        entered = latest(kit, APP)
        assert (entered["revision"], entered["exempt"], entered["clause"]) == (2, True, "announced-maintenance")
        assert latest(kit, OTHER)["revision"] == 1, "an exemption for one app leaves the others"
        month = json.loads(await kit.store.redis.get(kit.store.keys_of(APP).month(APP, date(2026, 11, 1))))
        assert (month["unavailable_slots"], month["exempt_slots"]) == (0, 1)

        await kit.exemptions.follow("exemptions", 0, 1, b"maint-1", None)  # a tombstone withdraws it
        await kit.tick()
        left = latest(kit, APP)
        assert (left["revision"], left["exempt"], left["clause"]) == (3, False, None)
        assert await kit.store.exemptions() == {}

    live(steps, grace_ms=0)


def test_an_exemption_for_every_app_and_a_changed_window(live) -> None:
    """``app_id`` null exempts every app; moving the window off the slot takes the slot out again."""

    async def steps(kit: LiveKit) -> None:
        await close_a_bad_slot(kit)
        await kit.exemptions.follow("exemptions", 0, 0, b"all", exemption(None, "force-majeure"))
        await kit.tick()
        assert {latest(kit, a)["clause"] for a in (APP, OTHER)} == {"force-majeure"}
        moved = json.loads(exemption(None, "force-majeure"))
        moved["start"], moved["end"] = "2020-01-01T00:00:00+08:00", "2020-01-01T01:00:00+08:00"
        await kit.exemptions.follow("exemptions", 0, 1, b"all", json.dumps(moved).encode())
        await kit.tick()
        assert {latest(kit, a)["exempt"] for a in (APP, OTHER)} == {False}

    live(steps, grace_ms=0)


def test_an_invalid_exemption_is_dead_lettered_and_changes_nothing(live) -> None:
    async def steps(kit: LiveKit) -> None:
        await close_a_bad_slot(kit)
        await kit.exemptions.follow("exemptions", 0, 7, b"bad", exemption(APP, "because-i-said-so"))
        no_offset = json.loads(exemption(APP))
        no_offset["start"] = "2026-11-26T16:01:00"
        await kit.exemptions.follow("exemptions", 0, 8, b"naive", json.dumps(no_offset).encode())
        await kit.tick()
        assert [(letter.offset, letter.key) for letter in kit.dead_letters] == [
            (7, b"exemptions:0:7"),
            (8, b"exemptions:0:8"),
        ]
        assert "unknown exemption clause 'because-i-said-so'" in kit.dead_letters[0].rejected.reason
        assert "UTC offset" in kit.dead_letters[1].rejected.reason
        assert await kit.store.exemptions() == {}
        assert latest(kit, APP)["revision"] == 1

    live(steps, grace_ms=0)
