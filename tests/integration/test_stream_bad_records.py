"""Bad records go to the dead-letter topic with their reason and origin; the good ones around them count.

Among valid records on both input topics, all in the worker's first batch:
a value that is not JSON, not UTF-8, UTF-16 and UTF-32 with byte-order
marks, a lone surrogate in an id, NaN, a 5,000-digit number, 100,000 levels
of nesting, a 1,000,000-character field, JSON that is not an event object, an
empty array, a tombstone, missing fields, wrong types, event times in 2100
and 1990, and an array with one bad element between good ones. Each bad
record (or element) lands on the dead-letter topic once, with a reason
naming the problem and the topic, partition and offset it came from; every
valid event, the good array elements included, is counted; the worker keeps
running and counts what comes after.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from schemas import assert_valid
from stream_harness import OutRecord, Truth, event_value, recent_slot, single_records, slot_traffic

from stream.sla.slots import to_epoch_ms

pytest_plugins = ["stream_harness"]

APP = "1400000001"


def test_stream_bad_records(stream_deployment):
    d = stream_deployment(grace_seconds=5)
    slot = recent_slot(15, d.settings)
    requests, successes = slot_traffic(APP, slot, 40, 40)
    good = {"event_id": "r-x", "app_id": APP, "room_id": "1", "user_id": "u", "ts": slot + 1}
    year_2100 = to_epoch_ms(datetime(2100, 1, 1, tzinfo=timezone.utc))
    year_1990 = to_epoch_ms(datetime(1990, 6, 1, tzinfo=timezone.utc))

    def raw(kind: str, value: bytes | str | None, partition: int = 1) -> OutRecord:
        return OutRecord(kind, partition, b"k", value.encode() if isinstance(value, str) else value)

    # (record, the words its dead letter's reason must contain), in produce order
    bad = [
        (raw("request", '{"event_id": "r-1", "app_id": '), "not valid JSON"),
        (raw("request", b'{"event_id": "\xff\xfe"}'), "not UTF-8"),
        (raw("request", json.dumps(good | {"event_id": "r-7"}).encode("utf-16")), "looks like UTF-16"),
        (raw("request", json.dumps(good | {"event_id": "r-8"}).encode("utf-32")), "looks like UTF-32"),
        (raw("request", json.dumps(good | {"event_id": "\ud800"})), "surrogate"),
        (raw("request", json.dumps(good | {"event_id": "r-9"})[:-1] + ', "x": NaN}'), "NaN"),
        (raw("request", json.dumps(good | {"event_id": "r-10"}).replace(str(slot + 1), "9" * 5000)), "too long"),
        (raw("request", "[" * 100_000 + "]" * 100_000), "nested too deeply"),
        (raw("request", json.dumps(good | {"event_id": "r-11", "room_id": "x" * 1_000_000})), "1,000,000 characters"),
        (raw("request", "42"), "must be a JSON object"),
        (raw("request", "[]"), "empty JSON array"),
        (raw("request", None), "no value"),
        (raw("request", json.dumps({k: v for k, v in good.items() if k != "app_id"})), "missing field 'app_id'"),
        (raw("request", json.dumps(good | {"event_id": "r-2", "app_id": 1400000001})), "'app_id' must be a string"),
        (raw("request", json.dumps(good | {"event_id": "r-3", "ts": str(slot)})), "'ts' must be integer"),
        (
            raw("request", json.dumps(good | {"event_id": "r-4", "ts": year_2100})),
            "absurd time (2100",
        ),
        (raw("request", json.dumps(good | {"event_id": "r-5", "ts": year_1990})), "absurd time (1990"),
        (raw("success", json.dumps({"event_id": "s-1", "app_id": APP})), "missing field 'request_id'"),
        (
            raw("success", json.dumps(vars_of(successes[0]) | {"event_id": "s-6", "request_ts": 1.5e12})),
            "'request_ts' must be integer",
        ),
    ]
    array = [json.loads(event_value(r)) for r in requests[30:33]]
    array.insert(1, good | {"event_id": "r-6", "ts": year_2100})
    bad_array = raw("request", json.dumps(array), partition=2)

    before = single_records(requests[:15] + successes[:20])
    after = single_records(requests[15:30] + requests[33:] + successes[20:])
    placed = d.produce(before + [record for record, _ in bad] + [bad_array] + after)
    d.start_worker()
    d.wait_settled()
    truth = Truth.of(requests + successes, d.settings)
    assert {k: s.counts for k, s in d.slots().items()} == truth.counts

    letters = d.read_topic("dead_letter")
    for letter in letters:
        assert_valid("dead-letter", letter.value)  # docs/schemas/dead-letter.schema.json
    origins = placed[len(before) : len(before) + len(bad) + 1]
    expected = [reason for _, reason in bad] + ["element 1: field 'ts'"]
    assert len(letters) == len(expected), [letter.value for letter in letters]
    by_origin = {(v["topic"], v["partition"], v["offset"]): v for v in (letter.value for letter in letters)}
    for origin, words in zip(origins, expected, strict=True):
        assert origin in by_origin, f"no dead letter for {origin} ({words})"
        assert words in by_origin[origin]["reason"], by_origin[origin]
    assert all(
        letter.key == f"{v['topic']}:{v['partition']}:{v['offset']}" for letter in letters for v in [letter.value]
    )
    huge = next(v for v in by_origin.values() if "1,000,000 characters" in v["reason"])
    assert huge["payload_truncated"] and huge["payload_bytes"] > 1_000_000 and len(huge["payload_sha256"]) == 64
    refused = {tp: int(n) for tp, n in d.redis_client.hgetall(d.keys.deadletters).items()}
    assert sum(refused.values()) == len(expected)

    # The worker is still there and counts what comes next.
    more, more_ok = slot_traffic(APP, slot, 5, 5, tag="more")
    d.produce([raw("request", "still not json")] + single_records(more + more_ok))
    d.wait_settled()
    assert all(w.alive for w in d.workers)
    assert (
        d.slots()[(APP, slot)].counts == Truth.of(requests + successes + more + more_ok, d.settings).counts[(APP, slot)]
    )
    assert len(d.read_topic("dead_letter")) == len(expected) + 1


def vars_of(event) -> dict:
    return json.loads(event_value(event))
