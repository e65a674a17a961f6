"""Exemptions recorded on the exemptions topic apply at once, also to slots closed before, and can be withdrawn.

Two apps each have an unavailable slot, closed (revision 1). An exemption for
one app whose window covers part of that slot makes its verdict exempt in the
next revision, with the clause, on the topic and in Redis, and moves the slot
from the month ledger's unavailable to its exempt slots; the other app's slot
is untouched. The same exemption moved away from the slot, moved back, and
withdrawn by a tombstone for its key: each change is a revision and the
ledger follows. An exemption for every app (no app_id) covers both apps. A
malformed exemption goes to the dead-letter topic and changes nothing.
"""

from __future__ import annotations

import json

from stream_harness import OutRecord, recent_slot, single_records, slot_traffic

from stream.sla.slots import local_date, local_time

pytest_plugins = ["stream_harness"]

APP, OTHER = "1400000001", "1400000002"


def test_stream_exemptions(stream_deployment):
    d = stream_deployment(grace_seconds=5)
    tz = d.settings.policy.timezone
    slot = recent_slot(20, d.settings)
    first_day = local_date(slot, tz).replace(day=1).isoformat()
    events = []
    for app in (APP, OTHER):
        requests, successes = slot_traffic(app, slot, 100, 90)
        events += requests + successes
    d.produce(single_records(events))
    d.start_worker()
    d.wait_settled()

    def verdict(app: str) -> dict:
        stored = d.slots()[(app, slot)].verdict
        assert stored is not None
        return stored

    def ledger(app: str) -> tuple[int, int]:
        month = d.month(app, first_day)
        assert month is not None
        return month["unavailable_slots"], month["exempt_slots"]

    def wait_revision(revision: str) -> None:
        d.wait_for(f"revision {revision} of {APP}:{slot}", lambda: verdict(APP)["revision"] == revision, 30)
        d.wait_settled()

    assert {k: verdict(app)[k] for app in (APP, OTHER) for k in ("revision", "unavailable", "exempt")} == {
        "revision": "1",
        "unavailable": "1",
        "exempt": "0",
    }
    assert ledger(APP) == ledger(OTHER) == (1, 0)

    window = {
        "app_id": APP,
        "start": local_time(slot + 60_000, tz).isoformat(),  # covers only part of the slot: enough
        "end": local_time(slot + 120_000, tz).isoformat(),
        "clause": "announced-maintenance",
        "note": "media cluster upgrade",
    }
    d.produce(
        [
            OutRecord("exemptions", 0, b"bad-1", json.dumps(window | {"clause": "bad luck"}).encode()),
            OutRecord("exemptions", 0, b"maint-1", json.dumps(window).encode()),
        ]
    )
    wait_revision("2")
    exempt = verdict(APP)
    assert (exempt["unavailable"], exempt["exempt"], exempt["clause"]) == ("1", "1", "announced-maintenance")
    message = d.latest_verdicts()[f"{APP}:{slot}"]
    assert (message["revision"], message["exempt"], message["clause"]) == (2, True, "announced-maintenance")
    assert ledger(APP) == (0, 1)
    assert verdict(OTHER)["revision"] == "1" and ledger(OTHER) == (1, 0)
    [letter] = d.read_topic("dead_letter")
    assert "unknown exemption clause 'bad luck'" in letter.value["reason"]
    assert (letter.value["topic"], letter.value["offset"]) == (d.topics.exemptions, 0)

    # Moved away from the slot, moved back, withdrawn by a tombstone: each change is a revision.
    moved = window | {
        "start": local_time(slot + 3_600_000, tz).isoformat(),
        "end": local_time(slot + 3_660_000, tz).isoformat(),
    }
    steps = [(json.dumps(moved).encode(), "0"), (json.dumps(window).encode(), "1"), (None, "0")]
    for revision, (value, exempt_now) in enumerate(steps, start=3):
        d.produce([OutRecord("exemptions", 0, b"maint-1", value)])
        wait_revision(str(revision))
        now = verdict(APP)
        assert (now["unavailable"], now["exempt"], now["clause"]) == (
            ("1", "1", "announced-maintenance") if exempt_now == "1" else ("1", "0", "")
        )
        message = d.latest_verdicts()[f"{APP}:{slot}"]
        assert (message["revision"], message["exempt"]) == (revision, exempt_now == "1")
        assert ledger(APP) == ((0, 1) if exempt_now == "1" else (1, 0))

    # An exemption for every app (no app_id) covers both.
    everyone = {k: v for k, v in window.items() if k != "app_id"} | {"clause": "force-majeure"}
    d.produce([OutRecord("exemptions", 0, b"fm-1", json.dumps(everyone).encode())])
    wait_revision("6")
    d.wait_for(f"revision 2 of {OTHER}:{slot}", lambda: verdict(OTHER)["revision"] == "2", 30)
    d.wait_settled()
    assert [verdict(app)["clause"] for app in (APP, OTHER)] == ["force-majeure", "force-majeure"]
    assert ledger(APP) == ledger(OTHER) == (0, 1)
