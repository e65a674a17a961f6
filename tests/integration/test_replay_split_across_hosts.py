"""``sla-stream replay --part K/N --run NAME``: one month's replay split across hosts sharing one Redis (issue 19).

Each part is a ``sla-stream replay`` process of its own, in a session of its
own, as it would run on a host of its own; they share only Kafka and Redis.

- On the Redis Cluster (3 shards), the two parts of November 2026 run at
  once print the slot CSV a one-host replay prints, byte for byte, and every
  slot's counts and verdict are the truth the harness computes from the
  events with the pure core.
- Part 1 killed with its whole session (SIGKILL: a host lost) mid-way, then
  run again beside part 0: the same CSV; part 0 says part 1 was run again.
- On a single Redis: a part given another number of parts, or another month,
  for the same run is refused in one line; part 0 alone gives up on part 1
  after ``--part-timeout`` with one line naming it and what to do, keeps the
  run, and, once part 1 has run, prints the truth.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
from datetime import datetime

from stream_harness import (
    FIXED_DATES_RETENTION_DAYS,
    SLA_STREAM,
    Deployment,
    OutRecord,
    Truth,
    batched_records,
    event_value,
    simulated_traffic,
    slot_traffic,
)

from stream.config import load_settings
from stream.events import RequestEvent
from stream.live.shards import shard_prefixes
from stream.live.store import Keys
from stream.monthend.replay import ReplayRequest, run_prefix, run_record_key
from stream.sla.slots import to_epoch_ms
from stream.statements.listing import slot_start_text

pytest_plugins = ["stream_harness", "redis_cluster"]

APPS = tuple(f"14000002{i:02d}" for i in range(12))
BULK_APP = "1400000299"
BULK_EVENTS = 60_000
"""One event a record, so that reading a part takes a few seconds: time to kill it mid-way."""
SHARDS = 3
MONTH = ["--month", "2026-11", "--format", "csv"]
TIMEOUT_S = 120


def started(d: Deployment, *args: str) -> subprocess.Popen[str]:
    """``sla-stream ARGS`` on ``d``'s settings, in a session of its own (a host: killed whole), output captured."""
    env = {**os.environ, **({"REDIS_URL": d.redis_url} if d.redis_url else {})}
    return subprocess.Popen(
        [*SLA_STREAM, *args, "--config", str(d.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def parts_at_once(d: Deployment, run: str) -> tuple[str, str]:
    """Both parts of ``run`` at once, one process each: part 0's report and summary; part 1 says it counted."""
    first, second = (started(d, "replay", *MONTH, "--part", f"{k}/2", "--run", run, "--processes", "1") for k in (0, 1))
    (code0, out0, err0), (code1, out1, err1) = finished(first), finished(second)
    assert code1 == 0 and out1 == "", err1
    assert err1.strip().splitlines()[-1].startswith(f"replay 2026-11 part 1/2 of run {run}: its share counted"), err1
    assert code0 == 0, err0
    summary = err0.strip().splitlines()[-1]
    assert summary.startswith("replayed 2026-11 in ") and f"counted in 2 parts (run {run})" in summary, err0
    return out0, summary


def one_host(d: Deployment) -> str:
    done = d.cli("replay", *MONTH, "--processes", "2", timeout_s=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(d: Deployment, *args: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr after any progress lines; that line."""
    done = d.cli("replay", *args, timeout_s=TIMEOUT_S)
    *before, last = done.stderr.strip().splitlines()
    assert done.returncode == 2 and last.startswith("sla-stream: "), (args, done.stderr)
    assert all(line.startswith("replay ") for line in before), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    return last


def replay_keys(d: Deployment) -> list[str]:
    """Every key of a replay namespace or run record of ``d`` left in Redis."""
    return list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*"))


def assert_truth(d: Deployment, report: str, truth: Truth) -> None:
    """Every slot row of the CSV (app, slot: counts, verdict) is the truth's, and no slot of it is missing."""
    tz = d.settings.policy.timezone
    rows = [row for row in csv.reader(io.StringIO(report)) if row and not row[0].startswith("#")][1:]
    got = {(row[0], row[2]): (int(row[3]), int(row[4]), row[5] == "unavailable") for row in rows}
    unavailable = truth.unavailable(d.settings)
    expected = {
        (app, slot_start_text(slot, tz)): (c.requests, c.successes, (app, slot) in unavailable)
        for (app, slot), c in truth.counts.items()
    }
    assert got == expected
    assert any(down for _, _, down in got.values()), "the incidents should make some slots unavailable"


def november_on_the_cluster(d: Deployment) -> Truth:
    """An hour of 12 apps' traffic with incidents and duplicates (JSON arrays), and a bulk of single-event records."""
    start = to_epoch_ms(datetime(2026, 11, 12, 10, 0, tzinfo=load_settings().policy.timezone))
    _, events = simulated_traffic(
        APPS,
        start,
        60,
        incidents=[(20, 40, 0.97, APPS[1]), (45, 50, 0.9, APPS[7])],
        peak_per_minute=60,
        seed=61,
        trough_share=1.0,
        duplicate_rate=0.005,
    )
    bulk = [RequestEvent(f"r-bulk-{n}", BULK_APP, "room", "u", start + n * 50) for n in range(BULK_EVENTS)]
    d.produce(batched_records(events, batch=20, single_every=50, stamped=True))
    d.produce(OutRecord("request", n % 4, b"bulk", event_value(e), e.ts) for n, e in enumerate(bulk))
    return Truth.of([*events, *bulk], d.settings)


def test_two_parts_on_the_cluster_give_the_one_host_report_also_after_a_part_is_killed(
    stream_deployment, redis_cluster
):
    d = stream_deployment(
        cluster_url=redis_cluster.url, shards=SHARDS, grace_seconds=0, retention_days=FIXED_DATES_RETENTION_DAYS
    )
    began = time.monotonic()
    truth = november_on_the_cluster(d)
    produced = time.monotonic()
    whole = one_host(d)
    assert_truth(d, whole, truth)
    assert parts_at_once(d, "both")[0] == whole
    assert not replay_keys(d), "the finished run's namespace and record are removed"
    timed = time.monotonic()

    # Part 1 alone, killed with its session once every shard of the run's namespace has counted some of it.
    shards = [Keys(p) for p in shard_prefixes(run_prefix(d.prefix, ReplayRequest(2026, 11), "killed"), SHARDS, True)]
    record = run_record_key(d.prefix, "killed")

    def applied_in_every_shard() -> bool:
        return bool(set.intersection(*(set(d.redis_client.hkeys(keys.offsets)) for keys in shards)))

    part = started(d, "replay", *MONTH, "--part", "1/2", "--run", "killed", "--processes", "1")
    deadline = time.monotonic() + 60
    while not applied_in_every_shard() and part.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert part.poll() is None, f"part 1 should still be counting: {finished(part)}"
    os.killpg(part.pid, signal.SIGKILL)
    code, _, err = finished(part)
    assert code == -signal.SIGKILL, f"part 1 should have been killed counting, not {code}: {err}"
    assert d.redis_client.hexists(record, "ready") and not d.redis_client.hexists(record, "done:1")

    report, summary = parts_at_once(d, "killed")
    assert report == whole
    assert "part 1 run again after stopping" in summary, summary
    print(
        f"{len(truth.counts):,} slots: produced in {produced - began:.1f} s, one host and two parts "
        f"in {timed - produced:.1f} s, the kill and the parts again in {time.monotonic() - timed:.1f} s"
    )
    assert not replay_keys(d)


def test_a_part_with_other_terms_is_refused_and_part_0_gives_up_on_a_part_that_never_starts(stream_deployment):
    d = stream_deployment(grace_seconds=0, retention_days=FIXED_DATES_RETENTION_DAYS)
    tz = d.settings.policy.timezone
    slot = to_epoch_ms(datetime(2026, 11, 20, 9, 0, tzinfo=tz))
    events = []
    for n, app in enumerate(APPS[:3]):
        requests, successes = slot_traffic(app, slot + n * 300_000, 40, 40 - 5 * n)
        events += requests + successes
    d.produce(OutRecord(e.kind, i % 4, b"k", event_value(e), e.ts) for i, e in enumerate(events))

    split = [*MONTH, "--run", "lonely", "--part-timeout", "3", "--processes", "1"]
    done = d.cli("replay", *split, "--part", "0/2", timeout_s=TIMEOUT_S)
    *before, last = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert last.startswith("sla-stream: part 1 of 2 of run lonely made no progress for 3 s (part 1: 0 of "), last
    assert "run it again with --run lonely (it goes on from what it counted), then this part again" in last, last
    assert any("waiting for part 1 of 2" in line for line in before), done.stderr
    assert d.redis_client.hexists(run_record_key(d.prefix, "lonely"), "done:0"), "the run is kept to go on from"

    assert "run lonely was begun with parts 2, this part has 3" in refused(d, *split, "--part", "1/3")
    other_month = refused(d, "--month", "2026-10", "--run", "lonely", "--part", "1/2")
    assert "run lonely was begun with month 2026-11, this part has 2026-10" in other_month, other_month

    second = d.cli("replay", *split, "--part", "1/2", timeout_s=TIMEOUT_S)
    assert second.returncode == 0 and second.stdout == "", second.stderr
    again = d.cli("replay", *split, "--part", "0/2", timeout_s=TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert_truth(d, again.stdout, Truth.of(events, d.settings))
    assert not replay_keys(d)
