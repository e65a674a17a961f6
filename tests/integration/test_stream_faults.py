"""Exact under faults: Redis outages, Redis losing its state or its last writes, Kafka's offsets ahead of Redis,
a broker restart, a stop while Redis is down, 100,000 events of one slot in one batch.

Each test produces a known event history, injects one fault while a real
worker counts it, and compares every slot's counts and verdict, and the
verdicts topic, with the truth computed from the events by the pure core.
Redis is a server of the test's own (:class:`stream_harness.RedisServer`),
so it can be stopped, killed, wiped or rolled back without touching others.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from stream_harness import (
    FLUSH_APP,
    INPUT_PARTITIONS,
    SLA_STREAM,
    OutRecord,
    Truth,
    array_value,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    recent_slot,
    simulated_traffic,
)

from stream.events import RequestEvent
from stream.sla.slots import SLOT_MS

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KAFKA_PIDFILE = DEPLOY.parent / ".run" / "kafka.pid"
UNAVAILABLE_LINE = "is unavailable"
BACK_LINE = "answers again"


def traffic(minutes: int = 90, seed: int = 5):
    start = hours_ago(20)
    plan, events = simulated_traffic(
        APPS, start, minutes, incidents=[(30, 45, 0.97, APPS[1])], peak_per_minute=200, seed=seed, trough_share=1.0
    )
    return start, plan, events


def settle_and_compare(d, plan, events) -> None:
    """Wait until everything is counted and closed, then compare Redis and the verdicts topic with the truth."""
    d.wait_settled(timeout_s=180, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert_slots_match_truth(d, Truth.of(events, d.settings), ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])


def log_lines(worker, text: str) -> list[str]:
    return [line for line in worker.lines() if text in line]


def probe(worker, path: str) -> tuple[int, str]:
    """The worker's answer on ``/healthz`` or ``/readyz``: status and its line (0: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


class ProbeWatch:
    """Polls a worker's probes every half second from a thread: what each answered, in order."""

    def __init__(self, worker) -> None:
        self.seen: list[tuple[str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(worker,), daemon=True)
        self._thread.start()

    def _poll(self, worker) -> None:
        while not self._stop.wait(0.5):
            for path in ("/healthz", "/readyz"):
                self.seen.append((path, *probe(worker, path)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_redis_stopped_30s_mid_stream(stream_deployment, redis_server):
    """Redis stops for 30 s while records keep coming: the worker stays up, says so twice, and loses nothing."""
    server = redis_server()
    start, plan, events = traffic()
    records = batched_records(events, batch=20, single_every=50)
    d = stream_deployment(redis_server=server, grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    worker = d.start_worker()
    d.wait_ready(worker)
    chunks = 30
    d.wait_for("the worker to be ready", lambda: probe(worker, "/readyz")[0] == 200, 30)
    probes = ProbeWatch(worker)
    outage = threading.Thread(target=lambda: (time.sleep(4), server.stop(), time.sleep(30), server.start()))
    outage.start()
    for i in range(chunks):  # production goes on through the outage (Kafka holds the records)
        d.produce(records[i * len(records) // chunks : (i + 1) * len(records) // chunks])
        time.sleep(0.5)
    outage.join()
    assert worker.alive, worker.tail()
    settle_and_compare(d, plan, events)
    probes.stop()
    assert worker.alive
    assert len(log_lines(worker, UNAVAILABLE_LINE)) == 1, worker.tail(80)
    assert len(log_lines(worker, BACK_LINE)) == 1, worker.tail(80)
    # Not ready while Redis was away (paused), ready again after; alive throughout (a restart cures nothing).
    readiness = [(status, line) for path, status, line in probes.seen if path == "/readyz"]
    assert any(status == 503 and "paused" in line for status, line in readiness), readiness
    assert {status for path, status, _ in probes.seen if path == "/healthz"} == {200}
    assert probe(worker, "/readyz") == (200, "ready: counting\n")


def test_redis_at_maxmemory_pauses_once_says_why_and_resumes_exact(stream_deployment, redis_server):
    """Redis refuses writes (maxmemory, noeviction) for 20 s while reads go on: one line each way, not ready
    meanwhile, nothing skipped (it said "unavailable" then "answers again after 0.0 s" 23 times, flapping)."""
    server = redis_server()
    start, plan, events = traffic(seed=11)
    half = len(events) // 2
    d = stream_deployment(redis_server=server, grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce_events(events[:half], batch=20)
    worker = d.start_worker()
    d.wait_applied()
    client = server.client()
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) // 2))
        probes = ProbeWatch(worker)
        d.produce_events(events[half:], batch=20)
        time.sleep(20)
        assert not d.all_applied(), "nothing can be written at maxmemory"
        client.config_set("maxmemory", 0)
    finally:
        client.close()
    settle_and_compare(d, plan, events)
    probes.stop()
    assert worker.alive
    refused = log_lines(worker, "refuses writes")
    assert len(refused) == 1 and "maxmemory" in refused[0], worker.tail(80)
    # Said once no write has been refused for a few seconds (health.QUIET_S): a write that fits does not end it.
    d.wait_for("the worker to say Redis accepts writes again", lambda: log_lines(worker, BACK_LINE), 30)
    assert len(log_lines(worker, BACK_LINE)) == 1, worker.tail(80)
    assert not log_lines(worker, UNAVAILABLE_LINE), worker.tail(80)
    assert any(path == "/readyz" and status == 503 and "paused" in line for path, status, line in probes.seen)
    d.wait_for("the worker to be ready again", lambda: probe(worker, "/readyz")[0] == 200, 30)


def test_redis_restarted_empty_refuses_then_rebuild_is_exact(stream_deployment, redis_server):
    """Redis comes back empty: the worker refuses to count from zero; `sla-stream rebuild` makes it exact again."""
    server = redis_server()
    start, plan, events = traffic(seed=6)
    half = len(events) // 2
    d = stream_deployment(redis_server=server, grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce_events(events[:half], batch=20)
    worker = d.start_worker()
    d.wait_applied()
    d.wait_for("some verdicts", lambda: len(d.verdict_keys()) > 10, 60)
    first_generation = int(d.redis_client.hget(d.keys.meta, "generation"))

    server.stop()
    server.wipe()
    server.start()
    d.produce_events(events[half:], batch=20)
    d.wait_for("the worker to refuse", lambda: log_lines(worker, "refusing to count"), 60)
    time.sleep(3)
    assert not d.slots(), "the worker counted into a namespace that lost its past"
    assert "sla-stream rebuild" in log_lines(worker, "refusing to count")[0]
    status, line = probe(worker, "/readyz")
    assert status == 503 and "refusing" in line and "sla-stream rebuild" in line, line
    assert probe(worker, "/healthz")[0] == 200

    done = subprocess.run([*SLA_STREAM, "rebuild", "--config", str(d.config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rebuilt generation" in done.stderr
    settle_and_compare(d, plan, events)
    d.wait_for("the worker to be ready again", lambda: probe(worker, "/readyz")[0] == 200, 30)
    assert int(d.redis_client.hget(d.keys.meta, "generation")) > first_generation
    latest = d.latest_verdicts()
    generations = {v["generation"] for key, v in latest.items() if not key.startswith(FLUSH_APP)}
    assert generations == {int(d.redis_client.hget(d.keys.meta, "generation"))}
    again = subprocess.run([*SLA_STREAM, "rebuild", "--config", str(d.config)], capture_output=True, text=True)
    assert again.returncode == 2 and "is in place" in again.stderr and again.stderr.count("\n") == 1


def test_redis_losing_its_last_writes_is_counted_again(stream_deployment, redis_server):
    """Redis comes back from an older snapshot while the worker runs: the partitions are read again from it."""
    server = redis_server(aof=False)
    start, plan, events = traffic(seed=7)
    third = len(events) // 3
    d = stream_deployment(redis_server=server, grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce_events(events[:third], batch=20)
    worker = d.start_worker()
    d.wait_applied()
    server.snapshot()
    d.produce_events(events[third : 2 * third], batch=20)
    d.wait_applied()
    server.kill()  # the second third was counted, but never persisted
    server.start()
    d.produce_events(events[2 * third :], batch=20)
    settle_and_compare(d, plan, events)
    assert log_lines(worker, "Redis lost writes"), worker.tail(80)
    assert len(log_lines(worker, "continues as generation")) == 1, "one new generation, whoever noticed first"


def test_kafka_committed_offsets_ahead_of_redis(stream_deployment):
    """Kafka's committed offsets pushed to the end: the worker still reads from Redis's positions."""
    start, plan, events = traffic(seed=8)
    half = len(events) // 2
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce_events(events[:half], batch=20)
    worker = d.start_worker()
    d.wait_applied()
    worker.stop()
    d.produce_events(events[half:], batch=20)
    consumer = KafkaConsumer(bootstrap_servers=d.bootstrap, group_id=d.group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in d.input_topics for p in range(INPUT_PARTITIONS)]
        ends = consumer.end_offsets(tps)
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    finally:
        consumer.close()
    d.start_worker()
    settle_and_compare(d, plan, events)


def test_sigterm_while_redis_is_down_stops_in_bounded_time(stream_deployment, redis_server):
    server = redis_server()
    start, plan, events = traffic(minutes=20, seed=9)
    d = stream_deployment(redis_server=server, grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    worker = d.start_worker()
    d.wait_ready(worker)
    server.stop()
    d.produce_events(events, batch=20)
    d.wait_for("the worker to notice", lambda: log_lines(worker, UNAVAILABLE_LINE), 60)
    began = time.monotonic()
    worker.stop(timeout_s=40)
    stopped_in = time.monotonic() - began
    print(f"stopped {stopped_in:.1f} s after SIGTERM, Redis down")
    assert worker.proc.returncode is not None and stopped_in < 10, f"stopped in {stopped_in:.1f} s"
    assert not log_lines(worker, "did not stop within"), "the stop was forced, not clean"


def test_100000_events_for_one_app_and_slot_in_one_batch(stream_deployment):
    """One partition batch holding 100,000 requests of one slot: past Lua's unpack limit, all counted once."""
    d = stream_deployment(grace_seconds=0)
    slot = recent_slot(30, d.settings)
    requests = [
        RequestEvent(f"r-big-{i}", APPS[0], str(i % 50), f"u{i % 997}", slot + 1 + i % (SLOT_MS - 2))
        for i in range(100_000)
    ]
    records = [OutRecord("request", 0, b"big", array_value(requests[i : i + 1000])) for i in range(0, 100_000, 1000)]
    d.produce(records)  # all waiting before the worker starts: its first take is one batch
    worker = d.start_worker()
    d.wait_applied(timeout_s=120)
    assert d.slots()[(APPS[0], slot)].requests == 100_000
    assert not log_lines(worker, "too many results to unpack")


def test_broker_restarted_mid_stream(stream_deployment):
    """The Kafka broker (the one deploy/kafka.sh started) restarts while the worker counts: exact afterwards."""
    if os.environ.get("KAFKA_BOOTSTRAP") or not KAFKA_PIDFILE.exists():
        pytest.skip("the broker was not started by deploy/kafka.sh, so this test may not restart it")
    start, plan, events = traffic(seed=10)
    half = len(events) // 2
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    d.produce_events(events[:half], batch=20)
    worker = d.start_worker("--log-format", "json")
    d.wait_for("some counting", lambda: sum(d.applied_offsets().values()) > 0, 60)
    for action in ("stop", "start"):
        if action == "start":
            time.sleep(15)  # an outage long enough for aiokafka to log its errors many times over
        done = subprocess.run(["bash", str(DEPLOY / "kafka.sh"), *([action] if action == "stop" else [])], text=True)
        assert done.returncode == 0, f"deploy/kafka.sh {action} failed"
    d.wait_for("the suite's admin client to reach the broker again", lambda: admin_answers(d.admin), 90)
    d.produce_events(events[half:], batch=20)
    settle_and_compare(d, plan, events)
    assert worker.alive
    # One line when Kafka went, one when it came back; aiokafka's error per attempt held back; JSON lines only.
    d.wait_for("the worker to say Kafka is back", lambda: log_lines(worker, "answers again (no error for"), 30)
    records = [json.loads(line) for line in worker.lines() if not line.startswith("--- start")]
    messages = [record["message"] for record in records]
    assert len([m for m in messages if "is unreachable" in m]) == 1, worker.tail(80)
    assert len([m for m in messages if m.startswith("Kafka at") and "answers again (no error" in m]) == 1
    held_back = [m for m in messages if ("Unable connect" in m or "Failed fetch" in m) and not m.startswith("Kafka at")]
    assert not held_back, worker.tail(80)
    assert {"time", "level", "logger", "message"} <= set(records[0])


def admin_answers(admin) -> bool:
    """Whether the (session-wide) admin client gets metadata: after a broker restart it reconnects with a backoff."""
    try:
        admin.list_topics()
    except KafkaError:
        return False
    return True
