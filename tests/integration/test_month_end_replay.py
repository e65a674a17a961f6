"""``sla-stream replay``: where it starts reading, what it keeps, and what it refuses.

A record stamped a little before its event's time is still found (the
margin), one stamped before the margin is not read at all, and without
``--app`` every app counted is reported; ``--keep`` leaves the namespace.
A month the topics no longer reach back to (records deleted from the start
of a partition, as retention does), a month not begun, an unknown app,
Kafka or Redis not answering: each is one line on stderr naming the cause,
exit status 2, nothing on stdout and no replay namespace left in Redis.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from kafka import TopicPartition
from stream_harness import (
    FIXED_DATES_RETENTION_DAYS,
    SLA_STREAM,
    Deployment,
    OutRecord,
    event_value,
    free_port,
    slot_traffic,
)

from stream.events import RequestEvent
from stream.sla.slots import to_epoch_ms

pytest_plugins = ["stream_harness"]

APP = "1400000001"


def refused(d: Deployment, *args: str, env: dict[str, str] | None = None) -> str:
    """Exit status 2, nothing on stdout, one line on stderr naming the cause (after any progress lines); that line."""
    done = d.cli(*args, env=env)
    *before, last = done.stderr.strip().splitlines()
    assert done.returncode == 2 and last.startswith("sla-stream"), (args, done.stderr)
    assert all(line.startswith("replay ") for line in before), done.stderr  # progress, when it got that far
    assert "Traceback" not in done.stderr and done.stdout == ""
    return last


def test_replay_refusals(stream_deployment, kafka_admin):
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)
    tz = d.settings.policy.timezone
    october, november = (to_epoch_ms(datetime(2026, m, 10, 12, 0, tzinfo=tz)) for m in (10, 11))
    records = []
    for slot in (october, november):  # all to partition 0, stamped with their time: October's first
        requests, successes = slot_traffic(APP, slot, 10, 10)
        records += [OutRecord(e.kind, 0, b"k", event_value(e), e.ts) for e in requests + successes]
    d.produce(records)

    assert "2099-01 has not begun" in refused(d, "replay", "--month", "2099-01")
    assert "unknown app 1499999999" in refused(d, "replay", "--month", "2026-11", "--app", "1499999999")
    assert "YYYY-MM" in refused(d, "replay", "--month", "2026-13")
    dead = f"127.0.0.1:{free_port()}"
    assert "Kafka at" in refused(d, "replay", "--month", "2026-11", env={"KAFKA_BOOTSTRAP": dead})
    assert "Redis at" in refused(d, "replay", "--month", "2026-11", env={"REDIS_URL": f"redis://{dead}/0"})
    assert d.cli("replay", "--month", "2026-10").returncode == 0, "whole, October can be replayed"

    # Retention took partition 0's first records (October's): October can no longer be replayed whole.
    kafka_admin.delete_records({TopicPartition(d.topics.requests, 0): 10})
    line = refused(d, "replay", "--month", "2026-10")
    assert f"topic {d.topics.requests} (partition 0) reaches back only to 2026-11-10T12:" in line, line
    assert "needs its records from 2026-09-30T2" in line and f"keep {FIXED_DATES_RETENTION_DAYS} days" in line, line

    assert not list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*"))


def test_replay_finds_records_sent_early_and_keeps_on_request(stream_deployment):
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)
    tz = d.settings.policy.timezone

    def at(day: int, hour: int, minute: int) -> int:
        return to_epoch_ms(datetime(2026, 10 if day > 20 else 11, day, hour, minute, tzinfo=tz))

    records = []
    # (event time, record stamp): October's evening; November's first minute, sent 30 minutes early; November 2nd.
    for n, (ts, stamp) in enumerate(
        [(at(31, 20, 0), at(31, 20, 0)), (at(1, 0, 1), at(31, 23, 31)), (at(2, 10, 0), at(2, 10, 0))]
    ):
        [request], [success] = slot_traffic(APP, ts, 1, 1, tag=str(n))
        records += [OutRecord("request", 0, b"k", event_value(request), stamp)]
        records += [OutRecord("success", 0, b"k", event_value(success), stamp)]
    d.produce(records)

    done = d.cli("replay", "--month", "2026-11", "--format", "json", "--keep")
    assert done.returncode == 0, done.stderr
    [month] = json.loads(done.stdout)  # no --app: every app counted
    assert (month["app_id"], month["requests"], month["successes"]) == (APP, 2, 2)
    [summary] = [line for line in done.stderr.splitlines() if line.startswith("replayed")]
    assert " 4 offsets, " in summary, "October's records, stamped before the margin, are not read"
    [prefix] = re.findall(r"kept under key prefix '([^']+)'", summary)
    assert prefix.startswith(d.prefix.rstrip(":") + "-replay-2026-11-")
    kept = list(d.redis_client.scan_iter(match=prefix + "*"))
    assert prefix + "meta" in kept and len(kept) > 5
    d.redis_client.delete(*kept)

    october = d.cli("replay", "--month", "2026-10", "--format", "json")
    assert [(m["requests"], m["successes"]) for m in json.loads(october.stdout)] == [(1, 1)], october.stderr


def test_a_replay_whose_process_is_killed_stops_cleanly_and_the_next_one_is_exact(stream_deployment):
    """SIGKILL one of a replay's counting processes: one line, exit 2, no key left; run again, the count is exact.

    The truth is the number of distinct requests produced, counted here, not by the code under test.
    """
    d = stream_deployment(retention_days=FIXED_DATES_RETENTION_DAYS)
    tz = d.settings.policy.timezone
    start = to_epoch_ms(datetime(2026, 11, 3, 0, 0, tzinfo=tz))
    records = [
        OutRecord("request", n % 4, b"k", event_value(RequestEvent(f"r-{n}", APP, "room", "u", start + n * 7)), None)
        for n in range(300_000)
    ]
    d.produce(records)
    replay = subprocess.Popen(
        [
            *SLA_STREAM,
            "replay",
            "--month",
            "2026-11",
            "--format",
            "json",
            "--processes",
            "2",
            "--config",
            str(d.config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children_file = Path(f"/proc/{replay.pid}/task/{replay.pid}/children")
    deadline = time.monotonic() + 60
    counting: list[int] = []
    while len(counting) < 2 and time.monotonic() < deadline and replay.poll() is None:
        counting = [int(pid) for pid in children_file.read_text().split()] if children_file.exists() else []
        time.sleep(0.05)
    assert len(counting) >= 2, "the replay should have started its counting processes"
    time.sleep(1.0)  # they import, plan and start reading; 150,000 records each take them several seconds
    os.kill(counting[-1], signal.SIGKILL)
    out, err = replay.communicate(timeout=120)
    lines = [line for line in err.splitlines() if not line.startswith("replay ")]
    assert replay.returncode == 2 and out == "", err
    assert len(lines) == 1 and "a replay process ended without its counts (exit status -9)" in lines[0], err
    assert not list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*")), "a killed replay's keys"

    again = d.cli("replay", "--month", "2026-11", "--format", "json")
    assert again.returncode == 0, again.stderr
    [month] = json.loads(again.stdout)
    assert (month["app_id"], month["requests"], month["successes"]) == (APP, len(records), 0)  # 300,000 distinct ids
