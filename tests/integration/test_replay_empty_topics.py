"""``sla-stream replay`` and ``rebuild`` on topics that hold nothing for the month (issue 18, item 4).

No figure without data: a replay of a month for which the input topics
hold no record at all, whether they were just created, emptied by
``deleteRecords``, or begin after the month, answers one line ("no records
for 2026-10 in topics …"), exit status 2, nothing on stdout and no replay
namespace left in Redis, as the other refusals (test_month_end_replay.py)
do. It never prints a traceback, and never says "run it again": running
it again gives the same answer. ``rebuild`` on such topics builds the
correct empty state (workers can resume from it) and says the topics hold
no records.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from kafka import TopicPartition
from stream_harness import (
    FIXED_DATES_RETENTION_DAYS,
    INPUT_PARTITIONS,
    Deployment,
    OutRecord,
    event_value,
    slot_traffic,
)

from stream.live.store import LAYOUT_VERSION
from stream.sla.slots import to_epoch_ms

pytest_plugins = ["stream_harness"]

APP = "1400000001"


def refused(d: Deployment, *args: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr naming the cause (after any progress lines); that line.

    As test_month_end_replay.py's helper of the same name.
    """
    done = d.cli(*args)
    *before, last = done.stderr.strip().splitlines()
    assert done.returncode == 2 and last.startswith("sla-stream"), (args, done.stderr)
    assert all(line.startswith("replay ") for line in before), done.stderr  # progress, when it got that far
    assert "Traceback" not in done.stderr and done.stdout == ""
    return last


def no_records(d: Deployment, month: str, *more: str) -> str:
    """The one-line refusal of a replay of ``month`` whose topics hold nothing for it; that line."""
    line = refused(d, "replay", "--month", month, *more)
    assert line.startswith(f"sla-stream: no records for {month} in topics {d.topics.requests}, {d.topics.successes}")
    assert "run it again" not in line, line
    return line


def no_replay_namespace_left(d: Deployment) -> bool:
    return not list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*"))


def slot_records(d: Deployment, month: int) -> list[OutRecord]:
    """A slot of traffic on the 10th of ``month`` 2026 at noon, requests on partitions 0 and 2, successes on 1,
    each record stamped with its event's time (10 of each: 20 records)."""
    slot = to_epoch_ms(datetime(2026, month, 10, 12, 0, tzinfo=d.settings.policy.timezone))
    requests, successes = slot_traffic(APP, slot, 10, 10, tag=str(month))
    return [OutRecord("request", 2 * (n % 2), b"k", event_value(e), e.ts) for n, e in enumerate(requests)] + [
        OutRecord("success", 1, b"k", event_value(e), e.ts) for e in successes
    ]


def rebuilt_empty(d: Deployment, *more: str) -> str:
    """``rebuild`` on topics without records: exit 0, the namespace live and holding nothing but its marker and
    layout (its version and number of shards); its output."""
    done = d.cli("rebuild", *more)
    assert done.returncode == 0 and "Traceback" not in done.stderr and done.stdout == "", done.stderr
    assert "rebuilt generation" in done.stderr and " 0 records, 0 events counted" in done.stderr, done.stderr
    assert d.redis_client.hget(d.prefix + "meta", "state") == "live"
    assert sorted(d.redis_client.scan_iter(match=d.prefix + "*")) == [d.prefix + "layout", d.prefix + "meta"]
    assert d.redis_client.get(d.prefix + "layout") == f"{LAYOUT_VERSION}:1"
    return done.stderr


def test_replay_and_rebuild_on_topics_just_created(stream_deployment):
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)

    line = no_records(d, "2026-10")
    assert line.endswith("they hold none (never written to)"), line
    assert no_records(d, "2026-10", "--processes", "1", "--format", "json") == line, "the same answer every time"
    assert no_replay_namespace_left(d)

    said = rebuilt_empty(d)
    assert "the input topics hold no records (never written to): the rebuilt state is empty" in said, said
    assert no_records(d, "2026-10") == line, "a rebuilt (empty) live state changes nothing"
    assert no_replay_namespace_left(d)


def test_replay_and_rebuild_on_topics_emptied_by_delete_records(stream_deployment, kafka_admin):
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)
    placed = d.produce(slot_records(d, 10))
    done = d.cli("replay", "--month", "2026-10", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [(m["app_id"], m["requests"], m["successes"]) for m in json.loads(done.stdout)] == [(APP, 10, 10)]

    # deleteRecords up to each partition's end: the topics exist and hold no record (offsets do not start at 0).
    ends: dict[TopicPartition, int] = {}
    for topic, partition, offset in placed:
        tp = TopicPartition(topic, partition)
        ends[tp] = max(ends.get(tp, 0), offset + 1)
    assert len(ends) == 3 < 2 * INPUT_PARTITIONS, "some partitions never had a record"
    kafka_admin.delete_records(ends)

    line = no_records(d, "2026-10")
    assert "they hold none (all 20 offsets they held were deleted, by retention or deleteRecords)" in line, line
    assert no_records(d, "2026-09") == line.replace("2026-10", "2026-09")
    assert no_replay_namespace_left(d)

    said = rebuilt_empty(d)
    assert "the input topics hold no records (all 20 offsets they held were deleted" in said, said


def test_replay_of_a_month_without_records_in_topics_that_hold_others(stream_deployment):
    """Records of August and October only: July (before any record) and September (none between) are refused."""
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)
    d.produce(slot_records(d, 8) + slot_records(d, 10))

    before = no_records(d, "2026-07")
    assert "none of the 40 records read (every record stamped from 2026-06-30T22:50+08:00 on)" in before, before
    assert "has an event in 2026-07" in before, before
    between = no_records(d, "2026-09", "--app", APP, "--processes", "2")
    assert "has an event in 2026-09" in between, between
    assert no_replay_namespace_left(d)
    kept = no_records(d, "2026-09", "--keep")
    [prefix] = re.findall(r"; its state is kept under key prefix '([^']+)'$", kept)
    d.redis_client.delete(*d.redis_client.scan_iter(match=prefix + "*"))
    assert no_replay_namespace_left(d)

    # One process per partition: most count a share of partitions without a record to read, which read nothing
    # and stop at once (aiokafka's CancelledError out of stop() ended them without their counts before).
    processes = str(2 * INPUT_PARTITIONS)
    done = d.cli("replay", "--month", "2026-10", "--format", "json", "--processes", processes)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert [(m["app_id"], m["requests"], m["successes"]) for m in json.loads(done.stdout)] == [(APP, 10, 10)]
