"""Live and offline counting agree: the Ingester's counts in Redis, the offline report's, and ``SlotTally``'s.

Random deliveries (hypothesis): a few apps, ids delivered more than once
(the same event again, or the same id at another time, kind or app),
successes whose request time lies in another slot, successes without
``request_ts``, times around a day boundary and around the month's end (so
some fall outside the month), and now and then a record that breaks the
contract. The same deliveries go to the live path as Kafka records (the
worker's Ingester, on the real Redis) and to the offline count as event
files (one plain, one gzipped, with a memory budget small enough to split
the spill); ``SlotTally`` counts them too. Every slot of the month must have
the same counts in all three, and what the offline count leaves out must be
what the others leave out: the events outside the month, the duplicates and
the refused lines.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from live_kit import PARTITIONS, START_MS, LiveKit, run_kit
from services import unique_name

from stream.events import RequestEvent, SuccessEvent, TimeBounds, to_line, to_record
from stream.offline.counting import CountedEvents, count_event_files
from stream.sla.counting import SlotTally
from stream.sla.verdict import SlotCounts

SHANGHAI = ZoneInfo("Asia/Shanghai")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def at(year: int, month: int, day: int) -> int:
    """Epoch ms of local midnight in Shanghai, computed without the code under test."""
    return (datetime(year, month, day, tzinfo=SHANGHAI) - EPOCH) // timedelta(milliseconds=1)


NOVEMBER = (at(2026, 11, 1), at(2026, 12, 1))
DAY_BOUNDARY = at(2026, 11, 27)  # START_MS (16:00 on the 26th) + 8 hours
NOW_MS = NOVEMBER[1] + 2 * 86_400_000
"""The live path's clock (and the offline bounds): after the month, so every time near its end is plausible."""
APPS = ("1400000001", "1400000002", "1400000003")
MINUTE = 60_000


@dataclass(frozen=True)
class Delivery:
    """One record as delivered: an event, or a broken record of a kind; to a partition."""

    event: RequestEvent | SuccessEvent | None
    broken: dict | None
    kind: str
    partition: int

    def record(self) -> bytes:
        return json.dumps(to_record(self.event) if self.event is not None else self.broken).encode()

    def line(self) -> str:
        if self.event is not None:
            return to_line(self.event)
        return json.dumps({"type": self.kind, **(self.broken or {})})


times = st.one_of(
    st.integers(DAY_BOUNDARY - 12 * MINUTE, DAY_BOUNDARY + 12 * MINUTE),
    st.integers(NOVEMBER[1] - 12 * MINUTE, NOVEMBER[1] + 12 * MINUTE),
    st.integers(START_MS, START_MS + 10 * MINUTE),
)


@st.composite
def deliveries(draw: st.DrawFn) -> list[Delivery]:
    """Events with duplicates (the same record again, or the same id elsewhere), in a random order."""
    made: list[Delivery] = []
    for _ in range(draw(st.integers(1, 40))):
        app = draw(st.sampled_from(APPS))
        event_id = draw(st.sampled_from([f"e-{n}" for n in range(12)]))
        ts = draw(times)
        partition = draw(st.integers(0, PARTITIONS - 1))
        shape = draw(st.integers(0, 19))
        if shape == 0:  # broken: a field missing, or a time that is not one
            kind = draw(st.sampled_from(["request", "success"]))
            broken = {"event_id": event_id, "app_id": app, "room_id": "r", "user_id": "u"}
            if draw(st.booleans()):
                broken["ts"] = str(ts)
            made.append(Delivery(None, broken, kind, partition))
            continue
        if shape < 10:
            event: RequestEvent | SuccessEvent = RequestEvent(event_id, app, "r", "u", ts)
        else:
            # The request up to 12 minutes before (another slot, maybe another day or month), or unknown.
            request_ts = None if shape == 19 else ts - draw(st.integers(0, 12 * MINUTE))
            event = SuccessEvent(event_id, f"r-{event_id}", app, "r", "u", ts, request_ts)
        made.append(Delivery(event, None, event.kind, partition))
        if draw(st.integers(0, 3)) == 0:  # delivered again, maybe to another partition
            made.append(Delivery(event, None, event.kind, draw(st.integers(0, PARTITIONS - 1))))
    return draw(st.permutations(made))


def count_live(redis_url: str, redis_client: redis.Redis, sent: list[Delivery]) -> tuple[dict, int, bytes]:
    """The deliveries through the live Ingester on a fresh namespace: counts of the slots they touch, dead letters,
    and November's coverage bitmap as Redis keeps it."""
    prefix = unique_name("sla-stream-test-live-vs-offline") + ":"
    found: dict[tuple[str, int], SlotCounts] = {}
    letters: list[int] = []
    covered: list[bytes] = []

    async def steps(kit: LiveKit) -> None:
        kit.clock.now_s = NOW_MS / 1000
        for kind in ("request", "success"):
            records = [kit.raw(kind, d.partition, d.record()) for d in sent if d.kind == kind]  # type: ignore[arg-type]
            for start in range(0, len(records), 7):  # in several batches
                await kit.count(kind, records[start : start + 7])  # type: ignore[arg-type]
        slots = sorted({(d.event.app_id, _slot(d.event)) for d in sent if d.event is not None})
        for key, counts in zip(slots, await kit.store.slot_counts(slots), strict=True):
            if counts != SlotCounts(0, 0):
                found[key] = counts
        letters.append(len(kit.dead_letters))
        covered.append((await kit.store.coverage("2026-11", *NOVEMBER)).to_bytes())

    try:
        run_kit(redis_url, prefix, steps)
    finally:
        keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            redis_client.delete(*keys)
    return found, letters[0], covered[0]


def _slot(event: RequestEvent | SuccessEvent) -> int:
    """The slot start of an event's counted time, from the spec (5-minute slots on the UTC+8 clock)."""
    counted = event.counted_ts
    return counted - (counted + 8 * 3_600_000) % 300_000


def count_offline(sent: list[Delivery], bounds: TimeBounds) -> tuple[CountedEvents, list[str]]:
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        half = len(sent) // 2
        plain, packed = Path(folder) / "a.jsonl", Path(folder) / "b.jsonl.gz"
        plain.write_text("".join(d.line() + "\n" for d in sent[:half]))
        packed.write_bytes(gzip.compress("".join(d.line() + "\n" for d in sent[half:]).encode()))
        counted = count_event_files(
            [plain, packed], SHANGHAI, NOVEMBER, bounds, lambda line: bad.append(str(line)), memory_budget=1_000
        )
    return counted, bad


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_live_and_offline_counts_are_the_same(redis_url: str, redis_client: redis.Redis, sent: list[Delivery]) -> None:
    live, dead_letters, live_coverage = count_live(redis_url, redis_client, sent)
    bounds = TimeBounds(946_684_800_000, NOW_MS + 600_000)  # the live path's: [events] earliest, max_future
    offline, bad = count_offline(sent, bounds)
    tally = SlotTally(SHANGHAI, NOVEMBER)
    for d in sent:
        if d.event is not None:
            tally.add(d.kind, d.event.app_id, d.event.event_id, d.event.counted_ts)  # type: ignore[arg-type]

    in_month = {key: counts for key, counts in live.items() if NOVEMBER[0] <= key[1] < NOVEMBER[1]}
    offline_slots = {(app, slot): counts for app in offline.apps() for slot, counts in offline.counts(app).items()}
    tally_slots = {(app, slot): counts for app in tally.apps() for slot, counts in tally.counts(app).items()}
    assert offline_slots == in_month == tally_slots
    assert offline.apps() == {app for app, _ in in_month}
    assert (offline.duplicates, offline.outside_window) == (tally.duplicates, tally.outside_window)
    assert offline.bad_lines == len(bad) == dead_letters == sum(1 for d in sent if d.event is None)
    outside = [d for d in sent if d.event is not None and not NOVEMBER[0] <= _slot(d.event) < NOVEMBER[1]]
    assert offline.outside_window == len(outside)
    assert {(d.event.app_id, _slot(d.event)) for d in outside} <= set(live), "live counts the other months' slots"
    minutes = {d.event.ts // MINUTE for d in sent if d.event is not None and NOVEMBER[0] <= d.event.ts < NOVEMBER[1]}
    assert sorted(m // MINUTE for m in offline.covered.minutes()) == sorted(minutes), "by each event's own time"
    assert offline.covered.to_bytes() == live_coverage, "the live bitmap and the offline map are the same bytes"
