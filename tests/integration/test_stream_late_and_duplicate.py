"""Late and duplicate data: closed slots are corrected openly, duplicates count once.

Live traffic of a few minutes ago; the worker's partitions go idle once caught
up, so wall-clock time closes the slots (a quiet app's slots still close).
A slot at exactly 98% closes unavailable (revision 1); a late success for one
of its failed requests lifts it to 99%, which is available: revision 2 appears
in Redis and on the verdicts topic and the month ledger loses the unavailable
slot. Records delivered twice, before or after the slot closed, count once;
late requests and successes are recorded as such; a late event that keeps the
verdict still changes the counts, so it makes a new revision carrying them
(the latest record per key on the verdicts topic always equals Redis), while
a duplicate, which changes nothing, makes none. A record re-sent seconds later for
a slot of three hours ago must count once too (a known bug: it counts again).
"""

from __future__ import annotations

from stream_harness import assert_topic_matches_redis, recent_slot, single_records, slot_traffic, success_for

from stream.events import RequestEvent
from stream.sla.slots import local_date

pytest_plugins = ["stream_harness"]

APP, OTHER = "1400000001", "1400000002"


def month_of(d, slot_ms: int) -> dict:
    first_day = local_date(slot_ms, d.settings.policy.timezone).replace(day=1).isoformat()
    ledger = d.month(APP, first_day)
    assert ledger is not None, f"no month ledger for {APP} {first_day}"
    return ledger


def test_stream_late_and_duplicate(stream_deployment):
    d = stream_deployment(grace_seconds=5)
    slot = recent_slot(20, d.settings)
    requests, successes = slot_traffic(APP, slot, 100, 98)
    other_requests, other_successes = slot_traffic(OTHER, slot, 100, 100)
    records = single_records(requests + successes + other_requests + other_successes)
    records += [records[0], records[150]]  # a request and a success record delivered twice
    d.produce(records)
    d.start_worker()
    d.wait_settled()

    stored = d.slots()
    first = stored[(APP, slot)]
    assert first.counts.requests == 100 and first.counts.successes == 98
    assert first.verdict is not None
    assert (first.verdict["revision"], first.verdict["unavailable"]) == ("1", "1")
    assert stored[(OTHER, slot)].verdict["unavailable"] == "0"
    assert month_of(d, slot)["unavailable_slots"] == 1

    # A late success for a failed request: 99 of 100 is exactly 99%, available.
    late = success_for(requests[99], ts=requests[99].ts + 25 * 60_000)
    d.produce_events([late])
    d.wait_settled()
    now = d.slots()[(APP, slot)]
    assert (now.requests, now.successes, now.late_requests, now.late_successes) == (100, 99, 0, 1)
    assert now.verdict is not None
    assert (now.verdict["revision"], now.verdict["unavailable"]) == ("2", "0")
    assert (now.verdict["requests"], now.verdict["successes"]) == ("100", "99")
    latest = d.latest_verdicts()[f"{APP}:{slot}"]
    assert (latest["revision"], latest["unavailable"], latest["successes"]) == (2, False, 99)
    revisions = [r.value for r in d.read_topic("verdicts") if r.key == f"{APP}:{slot}"]
    assert {(v["revision"], v["unavailable"]) for v in revisions} == {(1, True), (2, False)}
    assert month_of(d, slot)["unavailable_slots"] == 0

    # The late success delivered again, and a late request for the other app's slot (delivered twice):
    # counted once each; 100 successes of 101 requests keeps that slot available, but its counts changed:
    # revision 2 carries them. The duplicate late success changes nothing: no revision 3 for APP's slot.
    late_request = RequestEvent(f"r-late-{OTHER}", OTHER, "1", "u-late", slot + 1000)
    d.produce([single_records([late])[0]] + single_records([late_request]) * 2)
    d.wait_settled()
    stored = d.slots()
    mine, other = stored[(APP, slot)], stored[(OTHER, slot)]
    assert (mine.requests, mine.successes, mine.late_successes, mine.verdict["revision"]) == (100, 99, 1, "2")
    assert (other.requests, other.successes, other.late_requests, other.late_successes) == (101, 100, 1, 0)
    assert other.verdict is not None and (other.verdict["revision"], other.verdict["unavailable"]) == ("2", "0")
    latest = assert_topic_matches_redis(d)[f"{OTHER}:{slot}"]
    assert (latest["revision"], latest["requests"], latest["successes"]) == (2, 101, 100)
    assert month_of(d, slot)["requests"] == 100


def test_stream_duplicate_for_an_old_slot(stream_deployment):
    """A producer that re-sends a record a few seconds later, for a slot of three hours ago: counted once."""
    d = stream_deployment(grace_seconds=5)
    slot = recent_slot(180, d.settings)
    requests, successes = slot_traffic(APP, slot, 10, 10)
    d.produce(single_records(requests + successes))
    d.start_worker()
    d.wait_settled()
    assert d.slots()[(APP, slot)].counts.requests == 10

    late = RequestEvent(f"r-late-{APP}", APP, "1", "u-late", slot + 1000)
    d.produce(single_records([late]))  # late, but new: counts
    d.wait_settled()
    d.produce(single_records([late, requests[0]]))  # the same two records again, seconds later
    d.wait_settled()
    stored = d.slots()[(APP, slot)]
    counted = (stored.requests, stored.late_requests)
    assert counted == (11, 1), f"requests, late requests: {counted}, expected (11, 1)"
