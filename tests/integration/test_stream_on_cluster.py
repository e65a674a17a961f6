"""The live stream on a real Redis Cluster (3 masters, 3 replicas), its state in 6 shards by app: exact under faults.

Each test runs a deployment with ``[redis] cluster = true`` and ``shards = 6``
(deploy/redis-cluster.sh's cluster, ports 7100-7105) on the events of 32 apps,
so every master serves two shards holding several apps, and compares every
(app, slot)'s counts and verdict in the cluster, and the verdicts topic, with
the truth the harness computes from the events with the pure core:

- a worker of two killed with SIGKILL mid-stream;
- a master killed mid-stream after writes it acknowledged never reached its
  replica (``replication_cut``): the replica is promoted without them, and the
  worker must notice the lost writes, move the namespace to a new generation
  and read the partitions again from the shards' positions;
- a worker and the master of the home shard killed together, the same way;
- ``sla-stream replay`` of the month, and ``sla-stream rebuild``, on the cluster
  give the live figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from stream_harness import (
    FIXED_DATES_RETENTION_DAYS,
    FLUSH_APP,
    Deployment,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    simulated_traffic,
)

from stream.config import load_settings
from stream.live.shards import shard_of
from stream.sla.slots import to_epoch_ms

pytest_plugins = ["stream_harness", "redis_cluster"]

APPS = tuple(f"14000001{i:02d}" for i in range(32))
SHARDS = 6
CHUNKS = 20
LOST_WRITES_LINE = "continues as generation"
NOVEMBER = "2026-11-01"
REPLAY_TIMEOUT_S = 120
"""A bound on the replay test's ``sla-stream replay`` (about 35 s here)."""
STATEMENT_ONLY = frozenset({"digest", "running", "as_of", "coverage"})
"""What a statement's JSON has beyond the month ledger's figures (as in test_stream_end_to_end)."""


def traffic(start: int, seed: int, minutes: int = 90, peak_per_minute: int = 100):
    """Some 70,000 events of the 32 apps (app i peaks at ``peak / (i + 1)`` a minute), with two incidents."""
    return simulated_traffic(
        APPS,
        start,
        minutes,
        incidents=[(20, 40, 0.97, APPS[1]), (50, 60, 0.9, APPS[20])],
        peak_per_minute=peak_per_minute,
        seed=seed,
        trough_share=1.0,  # the same rate all day, whatever the hour the test runs at
        duplicate_rate=0.005,
    )


def on_cluster(stream_deployment, redis_cluster, start: int, **options) -> Deployment:
    """A deployment on the cluster in :data:`SHARDS` shards, closing slots by event time alone."""
    d = stream_deployment(
        cluster_url=redis_cluster.url,
        shards=SHARDS,
        grace_seconds=0,
        idle_lag_seconds=idle_lag_before(start - 3_600_000),
        **options,
    )
    assert (d.settings.redis_cluster, d.settings.redis_shards) == (True, SHARDS)
    return d


def masters_of_shards(d: Deployment, redis_cluster) -> dict[int, int]:
    """The port of the master serving each shard now."""
    return {i: redis_cluster.master_for_key(keys.meta) for i, keys in enumerate(d.shard_keys)}


def assert_spread(d: Deployment, redis_cluster) -> None:
    """Every master serves shards, and holds several of the apps."""
    masters = masters_of_shards(d, redis_cluster)
    apps_on: dict[int, int] = {port: 0 for port in masters.values()}
    for app in APPS:
        apps_on[masters[shard_of(app, SHARDS)]] += 1
    print(f"apps per master: {apps_on}; shards per master: {masters}")
    assert len(apps_on) == len(redis_cluster.masters()) == 3, apps_on
    assert min(apps_on.values()) >= 3, apps_on


def input_partitions_held(log: str, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the worker's last assignment as Faust logs it (see test_stream_scale_out)."""
    assignments = log.split("Setting newly assigned partitions")
    if len(assignments) < 2:
        return None
    row = re.search(rf"\| {re.escape(topic)} +\| \{{([0-9, -]+)\}}", assignments[-1])
    if not row:
        return set()
    held: set[int] = set()
    for item in row.group(1).split(","):
        first, _, last = item.strip().partition("-")
        held.update(range(int(first), int(last or first) + 1))
    return held


def start_two_workers(d: Deployment):
    workers = d.start_worker(), d.start_worker()
    for worker in workers:
        d.wait_for(
            f"{worker.name} to hold input partitions",
            lambda w=worker: bool(input_partitions_held(w.tail(400), d.topics.requests)),
            90,
        )
    return workers


def produce_in_chunks(d: Deployment, records, chunks: int, pause_s: float = 0.3, each=None) -> None:
    for i in range(chunks):
        d.produce(records[i * len(records) // chunks : (i + 1) * len(records) // chunks])
        if each is not None:
            each(i)
        time.sleep(pause_s)


def settle_and_compare(d: Deployment, plan, events) -> None:
    """Wait until everything is counted and closed, then compare the cluster and the verdicts topic with the truth."""
    d.wait_settled(timeout_s=180, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    counted = sum(s.requests + s.successes for key, s in d.slots().items() if key[0] != FLUSH_APP)
    assert counted == sum(c.requests + c.successes for c in truth.counts.values())


def lose_writes(d: Deployment, redis_cluster, victim: int, produce, kill_too=()) -> dict:
    """Produce with ``produce()`` while ``victim``'s replicas get nothing, until every shard applied it; then SIGKILL
    ``victim`` (and the workers ``kill_too``) and wait until its replica serves its slots.

    Returns what the shards of ``victim`` had acknowledged and then lost: ``{shard: {tp: (acknowledged, now)}}``.
    """
    lost_shards = [i for i, port in masters_of_shards(d, redis_cluster).items() if port == victim]
    redis_cluster.wait_replicated(victim)  # what was written before the cut survives
    with redis_cluster.replication_cut(victim):
        produce()
        d.wait_applied(timeout_s=30)  # acknowledged by every shard, the victim's included
        acknowledged = d.shard_offsets()
        for worker in kill_too:
            worker.kill()
        redis_cluster.kill(victim)
    failover = redis_cluster.wait_promoted(victim)
    print(f"master {victim} (shards {lost_shards}) killed; {failover.new_master} took over in {failover.seconds:.1f}s")
    now = when_answering(d, d.shard_offsets)
    lost = {
        shard: {
            tp: (acked[shard], now[tp][shard]) for tp, acked in acknowledged.items() if now[tp][shard] < acked[shard]
        }
        for shard in lost_shards
    }
    kept = {
        tp: (acked, now[tp])
        for tp, acked in acknowledged.items()
        if any(now[tp][i] != acked[i] for i in range(SHARDS) if i not in lost_shards)
    }
    assert not kept, f"shards of other masters changed their offsets: {kept}"
    assert all(lost.values()), f"the killed master's shards lost no applied offset: {lost}"
    return lost


def when_answering(d: Deployment, read):
    """``read()`` once the cluster answers it (a client may still be routed to the dead master for a moment)."""
    found = []
    d.wait_for("the cluster to answer", lambda: bool(found.append(read()) or found), 30)
    return found[-1]


def log_lines(worker, text: str) -> list[str]:
    return [line for line in worker.lines() if text in line]


def test_a_worker_killed_mid_stream_on_the_cluster_ends_exact(stream_deployment, redis_cluster):
    start = hours_ago(30)
    plan, events = traffic(start, seed=41)
    records = batched_records(events, batch=20, single_every=50)
    d = on_cluster(stream_deployment, redis_cluster, start)
    assert_spread(d, redis_cluster)
    first, second = start_two_workers(d)
    print(f"{len(events):,} events in {len(records):,} records, 2 workers, {SHARDS} shards")

    def kill_half_way(i: int) -> None:
        if i == CHUNKS // 2:
            first.kill()  # half the stream is still to come

    produce_in_chunks(d, records, CHUNKS, each=kill_half_way)
    assert second.alive
    settle_and_compare(d, plan, events)
    assert len(set(d.generations())) == 1, d.generations()


def test_a_master_killed_mid_stream_loses_writes_and_the_stream_ends_exact(stream_deployment, redis_cluster):
    """A master (not the home shard's) dies before its replica got its last writes: counted again, exactly."""
    start = hours_ago(30)
    plan, events = traffic(start, seed=43)
    records = batched_records(events, batch=20, single_every=50)
    third = len(records) // 3
    d = on_cluster(stream_deployment, redis_cluster, start)
    victim = redis_cluster.master_for_key(d.shard_keys[2].meta)
    worker = d.start_worker()
    d.wait_ready(worker)
    produce_in_chunks(d, records[:third], 5)
    d.wait_applied()
    before = d.generations()
    assert len(set(before)) == 1 and None not in before, before

    lost = lose_writes(d, redis_cluster, victim, lambda: produce_in_chunks(d, records[third : 2 * third], 5))
    print(f"offsets acknowledged then lost, by shard: {lost}")
    produce_in_chunks(d, records[2 * third :], 5)
    settle_and_compare(d, plan, events)

    assert worker.alive
    after = d.generations()
    assert len(set(after)) == 1 and after[0] > before[0], f"the namespace should be in a new generation: {after}"
    moves = log_lines(worker, LOST_WRITES_LINE)
    assert moves, f"the worker should have noticed the lost writes:\n{worker.tail(80)}"
    assert len(moves) == 1, "one new generation, whoever noticed first (as on a single Redis):\n" + "\n".join(moves)


def test_a_worker_and_the_home_master_killed_together_end_exact(stream_deployment, redis_cluster):
    """A worker and the master of the home shard (closer's lease, coverage) die at once, writes lost: exact."""
    start = hours_ago(30)
    plan, events = traffic(start, seed=47)
    records = batched_records(events, batch=20, single_every=50)
    half, three_quarters = len(records) // 2, 3 * len(records) // 4
    d = on_cluster(stream_deployment, redis_cluster, start)
    victim = redis_cluster.master_for_key(d.keys.meta)
    first, second = start_two_workers(d)
    produce_in_chunks(d, records[:half], 6)
    d.wait_applied()
    before = d.generations()

    lost = lose_writes(
        d, redis_cluster, victim, lambda: produce_in_chunks(d, records[half:three_quarters], 4), kill_too=[first]
    )
    print(f"offsets acknowledged then lost, by shard: {lost}")
    produce_in_chunks(d, records[three_quarters:], 6)
    settle_and_compare(d, plan, events)

    assert second.alive
    after = d.generations()
    assert len(set(after)) == 1 and after[0] > before[0], f"the namespace should be in a new generation: {after}"
    assert log_lines(second, LOST_WRITES_LINE), second.tail(80)


@dataclass
class November:
    """A deployment on the cluster after some of November 2026's traffic, settled, and what it holds."""

    d: Deployment
    truth: Truth
    ledgers: dict[str, dict[str, Any]]
    """Each app's November ledger, as the live worker left it."""
    still_open: list[str]
    worker: Any


def settled_november(stream_deployment, redis_cluster, seed: int) -> November:
    """An hour of November 2026 (a month over) counted live by one worker, every slot closed, checked exact."""
    start = to_epoch_ms(datetime(2026, 11, 12, 10, 0, tzinfo=load_settings().policy.timezone))
    plan, events = traffic(start, seed=seed, minutes=60, peak_per_minute=60)
    d = on_cluster(stream_deployment, redis_cluster, start, retention_days=FIXED_DATES_RETENTION_DAYS)
    worker = d.start_worker()
    d.produce(batched_records(events, batch=20, single_every=50, stamped=True))
    still_open = d.flush_stream_time(plan.end_ms + 3_600_000)
    d.wait_settled(timeout_s=180, still_open=still_open)
    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    ledgers = {app: d.month(app, NOVEMBER) for app in APPS}
    assert all(ledgers.values()), [app for app, ledger in ledgers.items() if not ledger]
    return November(d, truth, ledgers, still_open, worker)


def test_replay_on_the_cluster_gives_the_live_figures(stream_deployment, redis_cluster):
    """``sla-stream replay --month 2026-11`` on the cluster: each app's figures are its live ledger's, and the truth's.

    Bounded: the replay reads some 2,300 records; it has REPLAY_TIMEOUT_S to say so.
    """
    run = settled_november(stream_deployment, redis_cluster, seed=53)
    d = run.d
    began = time.monotonic()
    try:
        done = d.cli("replay", "--month", "2026-11", "--format", "json", "--processes", "2", timeout_s=REPLAY_TIMEOUT_S)
    except subprocess.TimeoutExpired as expired:
        progress = (expired.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        pytest.fail(f"sla-stream replay did not finish within {REPLAY_TIMEOUT_S} s on the cluster (last: {progress})")
    print(f"replay on the cluster: {time.monotonic() - began:.1f} s; {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    replayed = {m["app_id"]: m for m in json.loads(done.stdout) if m["app_id"] != FLUSH_APP}
    assert sorted(replayed) == sorted(APPS)
    for app, figures in replayed.items():
        assert run.ledgers[app] == {k: v for k, v in figures.items() if k not in STATEMENT_ONLY}, app
        expected = [c for (a, _), c in run.truth.counts.items() if a == app]
        assert (figures["requests"], figures["successes"]) == (
            sum(c.requests for c in expected),
            sum(c.successes for c in expected),
        ), app
    assert not list(d.redis_client.scan_iter(match=d.prefix.rstrip(":") + "-replay-*")), "a replay's keys were left"


def test_rebuild_on_the_cluster_gives_the_live_figures(stream_deployment, redis_cluster):
    """``sla-stream rebuild --force`` on the cluster, the worker running: a new generation, the same figures."""
    run = settled_november(stream_deployment, redis_cluster, seed=59)
    d = run.d
    before = d.generations()
    rebuilt = d.cli("rebuild", "--force", timeout_s=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt generation" in rebuilt.stderr, rebuilt.stderr
    d.wait_settled(timeout_s=120, still_open=run.still_open)
    assert_slots_match_truth(d, run.truth, ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    assert {app: d.month(app, NOVEMBER) for app in APPS} == run.ledgers
    after = d.generations()
    assert len(set(after)) == 1 and after[0] > before[0], f"the rebuild should make a new generation: {after}"
    assert run.worker.alive
