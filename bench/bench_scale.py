"""Issue 19's fleet-size figures of the live path: counting, closing, idle cost, /metrics, Redis memory.

Run by `make bench-scale`.

A plan of ``--apps`` apps (default 10,000), each with ``--slots-per-app``
consecutive 5-minute slots (24) of ``--requests-per-slot`` requests (10), each
request followed by its success 200 ms later; every 10th slot of the plan
misses one success (unavailable) and every 50th has one success too many, of
a request never sent (data quality). The events lie some five hours in the
past, so the run never waits on the clock. The **truth** is computed from the
plan itself (each slot's requests, successes and, with the pure core's
``judge_slot``, its verdict), never by tallying the events produced.

Each run, for each record shape (``--shapes``; DESIGN.md, "Event contract")
and each worker count (``--workers``: 1, then 2), has topics, a consumer
group, a Redis key prefix and metrics ports of its own, and its own copy of
the events, written before its workers start (4 partitions, records keyed by
app; librdkafka's producer):

- ``array``: a JSON array per app, slot and kind (the slot's requests in one
  record, its successes in another), as in the issue's measurements;
- ``single``: one event per record. Only the counting is measured with it (the
  closer, the metrics and Redis see the same slots whatever the shape), on
  the first ``--single-apps`` apps (2,000; 0: all) to keep the run short.

A raw aiokafka reader reads the first run's topics of each shape
(``bench_stream.raw_reader``: the ceiling of reading, for ratios across
machines). Then:

1. **count**: the backlog is in Kafka before the workers start; timed from the
   group formed with all its members and counting begun (as ``make bench``)
   until Redis's applied offsets reach the end offsets, and from the workers'
   start, for reference. Checked: every slot's counts in Redis.
2. **close** (array): ``grace_seconds`` is longer than the plan, and idle
   partitions never move stream time (``idle_lag_seconds`` past the plan), so
   no slot closes while counting. Right after the last event is counted, one
   request and one success per input partition (app ``flush``, as the
   integration harness's ``flush_stream_time``) move the watermark past every
   slot's end plus grace; timed until the verdicts are all committed and
   published (``open`` and the outbox empty), and until the closer is idle
   (month ledgers done, no tick under way): slots closed/s is the slots over
   the time from the last event counted. The closer's ticks are read from the
   worker's log ("closed N slots"). Checked: every verdict in Redis (counts,
   unavailable, data quality, revision 1, not exempt), the verdicts topic
   holds one record per slot, nothing dead-lettered.
3. **idle** (array): after a settling pause, ``--idle-seconds`` (60) of a
   quiet stream, nothing to count or close; each worker's CPU is read from
   ``/proc/<pid>/stat`` (utime + stime) as a share of one core. The machine's
   CPU use (``/proc/stat``) and Redis's (``INFO cpu``) over the same window
   (a cluster's masters summed) show the other load.
4. **metrics** (array): three scrapes of each worker's ``/metrics``: sample
   lines (series), those with an ``app`` label, bytes, seconds; per worker and
   summed over workers (what Prometheus stores). Checked: some worker exports
   the app series (every worker did before issue 19's change, the group's
   leader alone after it), and each one that does exports every app, with
   ``sla_slots_closed_total`` by outcome and ``sla_calls_total`` as the truth.
5. **memory** (array): Redis ``used_memory`` (``INFO memory``, a cluster's masters summed) before the
   workers start, with every slot closed and its event ids held, and after a
   second flush moved the watermark past ``dedup_hold_minutes`` and the closer
   released every id set (timed: ids released/s). The run's keys are counted
   by kind (SCAN of its prefix) and weighed with ``MEMORY USAGE`` (every key
   of a kind, or a random sample of ``--memory-sample`` keys times the count):
   bytes per held event id = the ``ids:`` sets' bytes / the ids they hold
   (checked: exactly the plan's distinct events), and, from ``INFO``, the drop
   of ``used_memory`` at the release / the ids released; bytes per closed slot
   = the run's keys' bytes after the release / the slots (and the per-slot
   ``slot:`` and ``verdict:`` hashes alone), and from ``INFO`` the growth of
   ``used_memory`` over the run / the slots. ``INFO`` figures include whatever
   else writes to the same Redis meanwhile; ``MEMORY USAGE`` ones do not.

Prints a table per run and a summary, writes every figure to
``.run/bench-scale/<time>-<apps>apps.json`` (and ``latest.json``); with
``--compare FILE`` (an earlier JSON), prints this run's figures over that
one's, run by run. Exits 1 when a count or verdict differs from the truth,
2 when a run failed (timed out, a worker died); the figures measured are
written either way. Each run deletes its topics, consumer group and Redis keys
afterwards (``--keep`` keeps them).

Redis (``--redis``, default ``single,cluster``): every shape and worker count
runs on each. ``single`` is the settings' Redis (``REDIS_URL``); ``cluster`` a
Redis Cluster (``REDIS_CLUSTER_URL``, else deploy/redis-cluster.sh's on
127.0.0.1:7100-7105, started with ``deploy/redis-cluster.sh up`` when none
answers, and left running). The workers' ``[redis] shards`` is ``--shards``
(default 1 on the single Redis: the plain layout every earlier version wrote;
12 on the cluster: 4 a master of 3), with ``[redis] cluster = true`` and the
cluster's url in ``REDIS_URL`` on the cluster. :class:`RedisTarget` (and
:class:`ClusterTarget`) is what a run needs of its Redis: the worker settings,
a client (redis-py's sync ``Redis`` or ``RedisCluster``), ``used_memory`` and
CPU (on a cluster summed over the masters; the replicas' copies left out),
SCANs over every master and deletion by hash slot. Every read of the live
state goes through its shards (:func:`stream.live.shards.shard_prefixes` of
the run's settings, :class:`Deployment`): an app's keys in its shard
(``shard_of``), the namespace's keys (applied offsets, open, dirty, outbox,
ledgerdue, idsheld) summed over the shards, a partition counted when every
shard applied it; the same exact checks against the truth run on both, and a
check ``shards`` that every shard holds a marker and exactly the plan's apps
of that shard, every ``slot:`` key in its app's shard. The summary sets issue
19's figures on each Redis side by side, and one worker's counting rate on the
cluster over the single Redis's, each shape (the issue: within 20%).

Needs Kafka and Redis (`make up`). ``--profile``: py-spy (``.venv-bench``'s,
`make bench-venv`, or one beside this Python) samples every worker while it
closes and while it idles; the stacks are kept beside the JSON, and the
summary shows own time by area and, of the busy samples (waits in ``select``
left out), the sla-stream functions' inclusive share.

The workers run the ``stream`` package this Python imports (its path and git
commit are kept with the figures, with ``--label``): to measure an older
commit against the tree, install a ``git archive`` of it in a venv of its own
and run this file with that venv's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from bench_stream import PY_SPY as BENCH_PY_SPY
from bench_stream import free_port, group_formed, print_profile, raw_reader, rss_mb
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError, RedisClusterException

import stream
from stream.config import Settings, load_settings
from stream.kafka_security import kafka_python_options
from stream.live.shards import shard_of, shard_prefixes
from stream.live.store import Keys
from stream.sla.slots import SLOT_MS, slot_start_ms
from stream.sla.verdict import SlotCounts, judge_slot
from stream.tools.topics import admin_client, ensure_topics, plan_topics

PARTITIONS = 4
PY_SPY = BENCH_PY_SPY if BENCH_PY_SPY.exists() else Path(sys.executable).with_name("py-spy")
"""py-spy of .venv-bench (`make bench-venv`), or of the environment running the bench."""
REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / ".run" / "bench-scale"
STREAM_DIR = Path(stream.__file__).resolve().parent
"""The sla-stream package measured (the workers run the one this Python imports)."""
FLUSH_APP = "flush"
POLL_S = 0.1
SETTLE_S = 12.0
"""Pause between the closer going idle and the idle window: two metrics refreshes (every 5 s) and a margin."""
SCRAPES = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "idle_cpu_pct": ("<", 5.0, "worker idle CPU under 5% of a core at 10,000 apps"),
    "slots_per_s": (">=", 5_000.0, "closer: at least 5,000 slots/s"),
    "scrape_s": ("<", 1.0, "a scrape at 10,000 apps answers in under 1 s"),
}
"""Issue 19's targets, shown next to the figures (they do not decide the exit status)."""
CLUSTER_RATIO_TOLERANCE = 0.2
"""Issue 19: one worker counts on a Redis Cluster within 20% of its rate on a single Redis."""
MIN_COUNT_S = 10.0
"""A count timed over less than this is too short for the cluster / single ratio (said next to it)."""
WORKER_ENV = {"PYTHONUNBUFFERED": "1"}
TICK_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*closed (\d+) slots, revised (\d+), published (\d+)"
)


# --------------------------------------------------------------------------- the plan and its truth


@dataclass(frozen=True)
class Plan:
    """What is produced, and what must come out: apps x slots x requests, about five hours ago."""

    apps: int
    slots: int
    requests: int
    start_ms: int
    """The first slot's start."""
    grace_s: int
    """``grace_seconds`` of the runs: longer than the plan, so no slot is due before the first flush."""
    flush_ms: int
    """The first flush's event time: every slot's end plus grace lies at or before it."""
    release_ms: int
    """The second flush's: past ``flush_ms`` by more than ``dedup_hold``, so every id set is released."""
    idle_lag_s: int
    """``idle_lag_seconds`` of the runs: idle partitions never move stream time into the plan."""
    dedup_hold_min: int

    @classmethod
    def make(cls, apps: int, slots: int, requests: int, dedup_hold_min: int, tz: Any) -> Plan:
        now_ms = int(time.time() * 1000)
        hold_ms = dedup_hold_min * 60_000
        grace_ms = max(slots * SLOT_MS, hold_ms + 2 * SLOT_MS)  # flush slots never close either
        release_ms = now_ms - 120_000
        flush_ms = release_ms - hold_ms - 60_000
        start_ms = slot_start_ms(flush_ms - grace_ms - slots * SLOT_MS, tz)
        idle_lag_s = (now_ms - start_ms) // 1000 + 86_400
        return cls(apps, slots, requests, start_ms, grace_ms // 1000, flush_ms, release_ms, idle_lag_s, dedup_hold_min)

    def app_id(self, a: int) -> str:
        return str(1_400_000_001 + a)

    def slot_ms(self, s: int) -> int:
        return self.start_ms + s * SLOT_MS

    def successes(self, a: int, s: int) -> int:
        """Every 10th slot of the plan misses a success (unavailable), every 50th has one too many (data quality)."""
        k = a * self.slots + s
        if k % 10 == 3:
            return self.requests - 1
        if k % 50 == 7:
            return self.requests + 1
        return self.requests

    def events(self, apps: int) -> int:
        return sum(self.requests + self.successes(a, s) for a in range(apps) for s in range(self.slots))

    def expected(self, a: int, s: int) -> SlotCounts:
        return SlotCounts(self.requests, self.successes(a, s))

    def slot_events(self, a: int, s: int) -> tuple[list[str], list[str]]:
        """The slot's requests and successes as JSON texts (the contract's fields, compact)."""
        app, slot = self.app_id(a), self.slot_ms(s)
        step = SLOT_MS // (self.requests + 2)
        serial = f"{app}-{slot // 1000}"
        requests, successes = [], []
        for i in range(self.successes(a, s)):
            if i < self.requests:
                request_id, ts = f"r-{serial}-{i:03d}", slot + (i + 1) * step
            else:  # a success of a request never sent: more successes than requests
                request_id, ts = f"r-{serial}-x{i:02d}", slot + (self.requests + 1) * step
            successes.append(
                f'{{"event_id":"s-{request_id[2:]}","request_id":"{request_id}","app_id":"{app}",'
                f'"room_id":"{i % 7}","user_id":"u{i}","ts":{ts + 200},"request_ts":{ts}}}'
            )
        for i in range(self.requests):
            requests.append(
                f'{{"event_id":"r-{serial}-{i:03d}","app_id":"{app}","room_id":"{i % 7}",'
                f'"user_id":"u{i}","ts":{slot + (i + 1) * step}}}'
            )
        return requests, successes


def partition_of(app_id: str) -> int:
    return zlib.crc32(app_id.encode()) % PARTITIONS


# --------------------------------------------------------------------------- Redis


class RedisTarget:
    """What a run needs of its Redis: a single server here (:class:`ClusterTarget`: a Redis Cluster).

    The worker settings that select it (:meth:`settings_toml`, :meth:`environ`),
    a client (redis-py's sync ``Redis``, or ``RedisCluster``, which routes each
    command and pipeline by key), ``used_memory`` and CPU (a cluster's summed
    over its masters), key scans (over every master) and deletion. Everything
    else in the bench goes through these, and through :meth:`Deployment.keys_of`
    for the key names of each shard.
    """

    name = "single"
    cluster = False

    def __init__(self, url: str, shards: int) -> None:
        self.url = url
        self.shards = shards
        self.client: redis.Redis | RedisCluster = redis.Redis.from_url(url, decode_responses=True, socket_timeout=60)

    @property
    def label(self) -> str:
        """The run's Redis in its name: ``single``, ``single:12`` (12 shards), ``cluster:12``."""
        return self.name if self.shards == 1 and not self.cluster else f"{self.name}:{self.shards}"

    def settings_toml(self) -> str:
        """Lines of the workers' ``[redis]`` table (the settings' url, or ``REDIS_URL``, is this server)."""
        return f"cluster = false\nshards = {self.shards}\n"

    def environ(self) -> dict[str, str]:
        """The environment the workers (and the bench's settings) are read with."""
        return dict(os.environ)

    def masters(self, section: str) -> dict[str, dict[str, Any]]:
        """``INFO section`` of each master by its address: this server's."""
        return {self.url: retrying(lambda: self.client.info(section))}

    def used_memory(self) -> int:
        return sum(int(info["used_memory"]) for info in self.masters("memory").values())

    def cpu_seconds(self) -> float:
        return sum(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]) for info in self.masters("cpu").values())

    def identity(self) -> list[str]:
        """Each master's address and ``run_id``: another list later means a master restarted or failed over."""
        return sorted(f"{name} {info['run_id']}" for name, info in self.masters("server").items())

    def describe(self) -> str:
        return f"{self.label} ({self.url})"

    def scan(self, pattern: str) -> Iterator[str]:
        """Every key matching the SCAN ``pattern`` (glob metacharacters of a prefix escaped by the caller)."""
        yield from self.client.scan_iter(match=pattern, count=20_000)

    def keys(self, pattern: str) -> list[str]:
        """:meth:`scan`'s keys, scanned again from the start when Redis fails meanwhile."""
        return retrying(lambda: list(self.scan(pattern)))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (UNLINK, by hash slot: a cluster takes one slot a command)."""
        return retrying(lambda: self._delete_prefix(prefix))

    def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        by_slot: dict[int, list[str]] = {}
        for key in self.scan(glob_escape(prefix) + "*"):
            batch = by_slot.setdefault(key_slot(key.encode()) if self.cluster else 0, [])
            batch.append(key)
            if len(batch) >= 5_000:
                deleted += self.client.unlink(*batch)
                batch.clear()
        for batch in by_slot.values():
            if batch:
                deleted += self.client.unlink(*batch)
        return deleted

    def close(self) -> None:
        self.client.close()


class ClusterTarget(RedisTarget):
    """A Redis Cluster: the workers' ``[redis] cluster = true`` and ``shards``, the cluster's url in ``REDIS_URL``.

    ``used_memory`` and CPU are summed over the masters (the replicas hold
    copies of the same keys, and are left out); SCAN runs on every master
    (redis-py's ``scan_iter`` on a cluster).
    """

    name = "cluster"
    cluster = True

    def __init__(self, url: str, shards: int) -> None:
        self.url = url
        self.shards = shards
        self.client = RedisCluster.from_url(url, decode_responses=True, socket_timeout=60)

    def settings_toml(self) -> str:
        return f"cluster = true\nshards = {self.shards}\n"

    def environ(self) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": self.url}  # over the settings' url and the single Redis's REDIS_URL

    def masters(self, section: str) -> dict[str, dict[str, Any]]:
        def read() -> dict[str, dict[str, Any]]:
            reply = self.client.info(section, target_nodes=RedisCluster.PRIMARIES)
            if all(isinstance(value, dict) for value in reply.values()):
                return reply
            return {self.client.get_primaries()[0].name: reply}  # a cluster of one master

        return retrying(read)

    def describe(self) -> str:
        nodes = ", ".join(node.name for node in self.client.get_primaries())
        return f"{self.label} ({self.url}; masters {nodes})"


CLUSTER_SCRIPT = REPO / "deploy" / "redis-cluster.sh"


def cluster_url() -> str:
    """``REDIS_CLUSTER_URL``, else the first node of deploy/redis-cluster.sh's (``REDIS_CLUSTER_PORTS``)."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        return os.environ["REDIS_CLUSTER_URL"]
    ports = os.environ.get("REDIS_CLUSTER_PORTS", "7100").replace(",", " ").split()
    return f"redis://127.0.0.1:{ports[0]}/0"


def cluster_answers(url: str) -> bool:
    """A cluster answers at ``url`` with ``cluster_state:ok``."""
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
        try:
            return client.cluster("info").get("cluster_state") == "ok"
        finally:
            client.close()
    except redis.RedisError:
        return False


def redis_target(kind: str, settings: Settings, shards: int) -> RedisTarget:
    """The single Redis of the settings, or the Redis Cluster (started by deploy/redis-cluster.sh if none answers)."""
    if kind == "single":
        return RedisTarget(settings.redis_url, shards)
    url = cluster_url()
    if not cluster_answers(url):
        print(f"bench-scale: no Redis Cluster answers at {url}; bash deploy/redis-cluster.sh up", flush=True)
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "up"], cwd=REPO, check=True)
    return ClusterTarget(url, shards)


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


T = TypeVar("T")
REDIS_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException)
"""What a read of the bench's may raise while a Redis restarts or a cluster master fails over (some 4-6 s)."""
RETRY_PAUSE_S = 2.0
RETRY_ATTEMPTS = 15
REDIS_RETRIES: list[str] = []
"""Every retry of the invocation (what failed): each run keeps the ones made during it, among its figures."""


def retrying(call: Callable[[], T]) -> T:
    """``call()`` (a read, or a deletion: idempotent), again after a pause when Redis fails transiently, up to
    :data:`RETRY_ATTEMPTS` times: a failover (other tests share the cluster) must not end a run; it is recorded."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call()
        except REDIS_TRANSIENT as error:
            if attempt == RETRY_ATTEMPTS:
                raise
            REDIS_RETRIES.append(f"{type(error).__name__}: {error}")
            print(f"    (Redis: {type(error).__name__}: {error}; again in {RETRY_PAUSE_S:.0f} s)", flush=True)
            time.sleep(RETRY_PAUSE_S)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- Kafka


def write_config(directory: Path, tag: str, inputs_tag: str, plan: Plan, target: RedisTarget) -> Path:
    """The settings of one run (its group, prefix and output topics; the shape's input topics); creates its topics."""
    path = directory / f"{tag}.toml"
    path.write_text(
        f'[stream]\ngroup = "{tag}"\ngrace_seconds = {plan.grace_s}\nidle_lag_seconds = {plan.idle_lag_s}\n'
        f"dedup_hold_minutes = {plan.dedup_hold_min}\n"
        f'[redis]\nkey_prefix = "{tag}:"\n{target.settings_toml()}'
        f"[kafka]\npartitions = {PARTITIONS}\n"
        "[kafka.topics]\n"
        + "".join(f'{name} = "{inputs_tag}.{name}"\n' for name in ("requests", "successes"))
        + "".join(f'{name} = "{tag}.{name}"\n' for name in ("exemptions", "verdicts", "dead_letter"))
    )
    settings = load_settings(path, target.environ())
    admin = admin_client(settings)
    try:
        ensure_topics(admin, plan_topics(settings))
    finally:
        admin.close()
    return path


def confluent_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's settings for ``[kafka]`` (protocol, SASL, CA and client certificate)."""
    security = settings.kafka_security
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "security.protocol": security.protocol}
    if security.sasl:
        config |= {
            "sasl.mechanism": security.sasl_mechanism,
            "sasl.username": security.username,
            "sasl.password": security.password,
        }
    for option, value in (
        ("ssl.ca.location", security.ca_file),
        ("ssl.certificate.location", security.cert_file),
        ("ssl.key.location", security.key_file),
        ("ssl.key.password", security.key_password),
    ):
        if value:
            config[option] = str(value)
    return config


class Sender:
    """A librdkafka producer (kafka-python's would take minutes for millions of records), counting per partition."""

    def __init__(self, settings: Settings) -> None:
        self.errors: list[str] = []
        self.producer = Producer(
            confluent_config(settings)
            | {
                "linger.ms": 20,
                "batch.size": 1 << 20,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1 << 20,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
            }
        )
        self.records: Counter[tuple[str, int]] = Counter()

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()}:{message.partition()}: {error}")

    def send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                self.producer.poll(0.2)
        self.records[(topic, partition)] += 1

    def flush(self) -> None:
        if self.producer.flush(120) or self.errors:
            raise RuntimeError(f"records not delivered: {self.errors[:3] or 'flush timed out'}")


def produce_plan(settings: Settings, plan: Plan, shape: str, apps: int) -> Counter[tuple[str, int]]:
    """The first ``apps`` apps' events of the plan, slot by slot, as ``shape`` records keyed by app; records per tp."""
    sender = Sender(settings)
    topics = settings.topics
    ids = [plan.app_id(a) for a in range(apps)]
    partitions = [partition_of(app) for app in ids]
    for s in range(plan.slots):
        for a in range(apps):
            key, partition = ids[a].encode(), partitions[a]
            requests, successes = plan.slot_events(a, s)
            for topic, texts in ((topics.requests, requests), (topics.successes, successes)):
                if shape == "array":
                    sender.send(topic, partition, key, ("[" + ",".join(texts) + "]").encode())
                else:
                    for text in texts:
                        sender.send(topic, partition, key, text.encode())
            if a % 2_000 == 0:
                sender.producer.poll(0)
    sender.flush()
    ends = end_offsets(settings, [topics.requests, topics.successes])
    if ends != {tp: n for tp, n in sender.records.items()} | {tp: 0 for tp in ends if tp not in sender.records}:
        raise RuntimeError(f"end offsets {ends} differ from the records produced {dict(sender.records)}")
    return sender.records


def flush_stream_time(settings: Settings, plan: Plan, ts_ms: int) -> None:
    """One request and its success of app ``flush`` at ``ts_ms`` on every input partition (the harness's way)."""
    sender = Sender(settings)
    for p in range(PARTITIONS):
        serial = f"{ts_ms}-{p}"
        request = f'{{"event_id":"r-flush-{serial}","app_id":"{FLUSH_APP}","room_id":"0","user_id":"f","ts":{ts_ms}}}'
        success = (
            f'{{"event_id":"s-flush-{serial}","request_id":"r-flush-{serial}","app_id":"{FLUSH_APP}",'
            f'"room_id":"0","user_id":"f","ts":{ts_ms},"request_ts":{ts_ms}}}'
        )
        sender.send(settings.topics.requests, p, b"flush", request.encode())
        sender.send(settings.topics.successes, p, b"flush", success.encode())
    sender.flush()


def end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_python_options(settings.kafka_security)
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        return {(tp.topic, tp.partition): offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def delete_topics(settings: Settings, prefix: str, groups: list[str]) -> None:
    """The topics named ``prefix...`` (Faust's ``<group>-__assignor-__leader`` among them) and the groups."""
    admin = admin_client(settings)
    try:
        names = [name for name in admin.list_topics() if name.startswith(prefix)]
        if names:
            admin.delete_topics(names, timeout_ms=30_000)
        if groups:
            admin.delete_groups(groups)
    except Exception as error:  # noqa: BLE001 - leftovers are harmless; say so and go on
        print(f"  (topics or groups of {prefix} not all removed: {error})", file=sys.stderr)
    finally:
        admin.close()


# --------------------------------------------------------------------------- workers


class Worker:
    """One ``sla-stream worker`` process with /metrics on a port of its own, logging to a file."""

    def __init__(self, config: Path, home: Path, environ: dict[str, str]) -> None:
        home.mkdir(parents=True)
        self.port = free_port()
        self.log = home / "worker.log"
        self.started = time.monotonic()
        with self.log.open("wb") as out:
            command = [sys.executable, "-m", "stream.cli", "worker", "--config", str(config)]
            command += ["--metrics-port", f"127.0.0.1:{self.port}"]
            self.proc = subprocess.Popen(
                command, cwd=home, stdout=out, stderr=subprocess.STDOUT, env={**environ, **WORKER_ENV}
            )
        self.peak_rss_mb = 0.0

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}; its log: {self.log}")
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.proc.pid))

    def cpu_s(self) -> float:
        """utime + stime of the worker process (all its threads), in seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def scrape(self) -> tuple[str, float]:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=60) as response:
            body = response.read().decode()
        return body, time.perf_counter() - started

    def ticks(self) -> list[tuple[float, int]]:
        """(log time, slots closed) of each closer tick that closed or revised something, from the log."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = TICK_LINE.match(line)
            if match:
                when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((when, int(match[2])))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def broker_cpu_s() -> float | None:
    """utime + stime of the local Kafka broker (the JVM running ``kafka.Kafka``), None when none runs here."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"kafka.Kafka" in (proc / "cmdline").read_bytes():
                fields = (proc / "stat").read_text().rpartition(")")[2].split()
                return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            continue
    return None


def py_spy(pid: int, out: Path, seconds: float | None = None) -> subprocess.Popen[bytes]:
    command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--format", "raw"]
    command += ["-o", str(out)] + (["--duration", str(int(seconds))] if seconds else [])
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


ENTRY_POINTS = ("stream/cli.py", "stream/live/worker.py")
"""Frames under every sample of a worker: left out of the inclusive listing."""
WAITING = ("select (selectors.py", "wait (threading.py")
"""Leaf frames of a thread waiting (the event loop's select, a thread's wait): not CPU, left out of the busy time."""


def print_busy_profile(path: Path, top: int = 15) -> None:
    """Inclusive share of the busy samples (waits left out) of each sla-stream function: where a phase's CPU goes.

    Lower bounds: py-spy ``--nonblocking`` cuts some stacks short (they lack their outer frames).
    """
    inclusive: Counter[str] = Counter()
    busy = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in WAITING):
            waiting += int(count)
            continue
        busy += int(count)
        names = set()
        for frame in frames:
            function, _, where = frame.partition(" (")
            if ("stream/" in where or "chinese_calendar/" in where) and not where.startswith(ENTRY_POINTS):
                names.add(f"{function} ({where.rpartition(':')[0]})")
        for name in names:
            inclusive[name] += int(count)
    if not busy:
        return
    print(f"  busy samples: {busy:,} ({100 * busy / (busy + waiting):.0f}%); sla-stream functions, inclusive:")
    for name, count in inclusive.most_common(top):
        print(f"    {100 * count / busy:5.1f}%  {name}")


def stop_py_spy(sampler: subprocess.Popen[bytes]) -> None:
    if sampler.poll() is None:
        sampler.send_signal(signal.SIGINT)  # py-spy writes what it has
    try:
        sampler.wait(60)
    except subprocess.TimeoutExpired:
        sampler.kill()


# --------------------------------------------------------------------------- a run


@dataclass
class Context:
    """What every run of an invocation shares."""

    plan: Plan
    targets: list[RedisTarget]
    """The Redis of each run (``--redis``): a single server, a cluster, or both."""
    directory: Path
    stamp: str
    tag: str
    """The invocation's unique prefix of topics, groups and Redis keys."""


@dataclass
class Run:
    """One shape counted (and, for arrays, closed, idled, scraped and weighed) by ``workers`` workers."""

    shape: str
    workers: int
    apps: int
    events: int
    records: int
    redis: str = "single"
    """The Redis: ``single`` or ``cluster``."""
    shards: int = 1
    """``[redis] shards`` of the run's workers."""
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    """Each check's name and "ok" or what differed."""
    error: str | None = None

    @property
    def redis_label(self) -> str:
        """``single``, ``single:12``, ``cluster:12``: the Redis and, unless one on a single Redis, the shards."""
        return self.redis if self.redis == "single" and self.shards == 1 else f"{self.redis}:{self.shards}"

    @property
    def name(self) -> str:
        """``array 1w single``, ``array 2w cluster:12`` (12 shards)."""
        return f"{self.shape} {self.workers}w {self.redis_label}"

    @property
    def disturbed(self) -> bool:
        """Redis failed (a read retried) or a master changed during the run (:func:`disturbed`)."""
        return bool(self.figures.get("redis_retries") or self.figures.get("redis_masters_changed"))

    def check(self, name: str, problems: list[str]) -> None:
        self.checks[name] = "ok" if not problems else f"{len(problems)} wrong, e.g. {problems[:3]}"
        print(f"    check {name}: {self.checks[name]}", flush=True)


class Deployment:
    """A run's settings, Redis, workers and the waits on them; the key names of each shard of its live state.

    Every read of the live state goes through the shards as the workers' store
    lays them out (:func:`stream.live.shards.shard_prefixes` of the run's
    settings): an app's keys through :meth:`keys_of`, the namespace's (offsets,
    open, dirty, outbox, ledgerdue, idsheld) summed or checked over
    :attr:`shards`; the closer's lease is in the first shard.
    """

    def __init__(self, config: Path, target: RedisTarget, plan: Plan, timeout_s: float) -> None:
        self.settings = load_settings(config, target.environ())
        self.prefix = self.settings.key_prefix
        self.shards = [
            Keys(prefix)
            for prefix in shard_prefixes(self.prefix, self.settings.redis_shards, self.settings.redis_cluster)
        ]
        self.home = self.shards[0]
        self.tags = {
            k.prefix[len(self.prefix) + 1 : -2]: i for i, k in enumerate(self.shards) if k.prefix != self.prefix
        }
        """Each shard's hash tag (``prefix{tag}:``) and its index."""
        self.redis = target
        self.r = target.client
        self.plan = plan
        self.timeout_s = timeout_s
        self.config = config
        self.workers: list[Worker] = []
        self.counted_at = 0.0
        """When the last record of the plan was seen applied (monotonic)."""

    def keys_of(self, app_id: str) -> Keys:
        """The key names of the shard holding ``app_id``."""
        return self.shards[shard_of(app_id, len(self.shards))]

    def shard_index(self, app_id: str) -> int:
        return shard_of(app_id, len(self.shards))

    def read(self, fill: Callable[[Any], object]) -> list[Any]:
        """The replies of a pipeline of reads that ``fill`` queues (retried whole on a transient failure)."""

        def execute() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            fill(pipe)
            return pipe.execute()

        return retrying(execute)

    def per_shard(self, command: str, name: str, *args: Any) -> list[Any]:
        """``command`` on the namespace key ``name`` (a :class:`Keys` attribute) of every shard, in one pipeline."""

        def read() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for keys in self.shards:
                getattr(pipe, command)(getattr(keys, name), *args)
            return pipe.execute()

        return retrying(read)

    def start(self, count: int) -> None:
        for index in range(count):
            home = self.config.parent / f"{self.config.stem}-w{index}"
            self.workers.append(Worker(self.config, home, self.redis.environ()))

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def applied_records(self) -> int:
        """Records applied in every shard: each partition's least applied offset over the shards, plus one.

        Every shard records every partition batch's offsets (one step a shard);
        a shard without a partition's offset has applied none of it.
        """
        replies = self.per_shard("hgetall", "offsets")
        tps = set().union(*replies)
        return sum(min(int(reply.get(tp, -1)) for reply in replies) + 1 for tp in tps)

    def wait(self, what: str, condition: Any, every_s: float = POLL_S) -> float:
        """Poll ``condition`` until it holds; the monotonic time it was first seen to."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            for worker in self.workers:
                worker.check()
            if condition():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {self.timeout_s:.0f} s waiting for {what}")
            time.sleep(every_s)

    def data_open(self) -> int:
        """Open slots of the plan in every shard (the flush app's slots start later)."""
        return sum(self.per_shard("zcount", "open", "-inf", f"({self.plan.flush_ms - SLOT_MS}"))

    def outbox(self) -> int:
        """Verdict messages not yet published, over every shard's outbox."""
        return sum(self.per_shard("llen", "outbox"))

    def ids_held(self) -> int:
        """Closed slots still holding their id sets, over every shard."""
        return sum(self.per_shard("zcard", "idsheld"))

    def closer_idle(self) -> bool:
        """Every shard's outbox, dirty slots and due ledgers empty, and the closer's lease (first shard) free."""

        def read() -> list[int]:
            pipe = self.r.pipeline(transaction=False)
            for k in self.shards:
                pipe.llen(k.outbox)
                pipe.scard(k.dirty)
                pipe.scard(k.ledgerdue)
            pipe.exists(self.home.closer_lease)
            return pipe.execute()

        return not any(retrying(read))

    def split_key(self, key: str) -> tuple[int, str]:
        """A key of the run's namespace as (its shard, the rest after the shard's prefix); shard -1: the
        namespace's own (``layout``). With several shards a shard's prefix is ``prefix{tag}:``."""
        rest = key[len(self.prefix) :]
        if len(self.shards) == 1 and not self.settings.redis_cluster:
            return 0, rest
        if not rest.startswith("{"):
            return -1, rest
        tag, _, rest = rest[1:].partition("}:")
        return self.tags[tag], rest


def count_phase(d: Deployment, run: Run, total_records: int, workers: int) -> None:
    """Start the workers on the backlog; time them until Redis holds every partition's last offset."""
    admin = admin_client(d.settings)
    cpu_before: list[float] = []
    others_before: tuple[tuple[int, int], float, float | None] = (machine_busy(), d.redis.cpu_seconds(), broker_cpu_s())
    try:
        started = time.monotonic()
        d.start(workers)
        formed: tuple[float, int] | None = None

        def counted() -> bool:
            nonlocal formed, cpu_before, others_before
            applied = d.applied_records()
            if formed is None and applied > 0 and group_formed(admin, d.settings.group, workers):
                formed = (time.monotonic(), applied)
                cpu_before = [w.cpu_s() for w in d.workers]
                others_before = (machine_busy(), d.redis.cpu_seconds(), broker_cpu_s())
            return applied >= total_records

        done = d.wait("every record counted", counted, every_s=0.05)
    finally:
        admin.close()
    note = None
    if formed is None or formed[1] >= 0.9 * total_records:  # too few events to time once the group formed
        formed, note = (started, 0), "timed from the workers' start: the group formed too late; use more apps"
        cpu_before = [0.0] * workers
        print(f"    note: {note}", flush=True)
    at, applied_then = formed
    events = round(run.events * (total_records - applied_then) / total_records)  # records carry alike counts
    cpu = [w.cpu_s() - c for w, c in zip(d.workers, cpu_before, strict=True)]
    (busy0, total0), redis0, broker0 = others_before
    (busy1, total1), redis1, broker1 = machine_busy(), d.redis.cpu_seconds(), broker_cpu_s()
    run.figures["count"] = {
        "seconds": done - at,
        "events_counted_in_it": events,
        "events_per_s": events / (done - at),
        "seconds_from_start": done - started,
        "events_per_s_from_start": run.events / (done - started),
        "worker_cpu_s": cpu,
        "cpu_us_per_event": 1e6 * sum(cpu) / max(1, events),
        "machine_cpu_pct_of_all_cores": 100 * (busy1 - busy0) / max(1, total1 - total0),
        "redis_cpu_s": redis1 - redis0,
        "broker_cpu_s": None if broker0 is None or broker1 is None else broker1 - broker0,
        "peak_rss_mb": [w.peak_rss_mb for w in d.workers],
        "note": note,
    }
    d.counted_at = done


def check_counts(d: Deployment, run: Run, apps: int, verdicts: bool) -> None:
    """Every slot of the plan in Redis: its counts (and verdict) equal the truth; no other slot of the plan's apps."""
    plan = d.plan
    policy = d.settings.policy
    counts_wrong: list[str] = []
    verdicts_wrong: list[str] = []
    slots = [(a, s) for a in range(apps) for s in range(plan.slots)]
    for start in range(0, len(slots), 5_000):
        chunk = slots[start : start + 5_000]

        def fill(pipe: Any, chunk: list[tuple[int, int]] = chunk) -> None:
            for a, s in chunk:
                k = d.keys_of(plan.app_id(a))
                pipe.hmget(k.slot(plan.app_id(a), plan.slot_ms(s)), "requests", "successes", "late_requests")
                if verdicts:
                    pipe.hgetall(k.verdict(plan.app_id(a), plan.slot_ms(s)))

        replies = iter(d.read(fill))
        for a, s in chunk:
            requests, successes, late = next(replies)
            expected = plan.expected(a, s)
            name = f"{plan.app_id(a)}:{plan.slot_ms(s)}"
            if (int(requests or 0), int(successes or 0), late) != (expected.requests, expected.successes, None):
                counts_wrong.append(f"{name} {requests}/{successes} (late {late}) for {expected}")
            if verdicts:
                verdict = next(replies)
                judged = judge_slot(expected, policy)
                want = {
                    "revision": "1",
                    "requests": str(expected.requests),
                    "successes": str(expected.successes),
                    "unavailable": "1" if judged.unavailable else "0",
                    "exempt": "0",
                    "data_quality": "1" if judged.data_quality_issue else "0",
                }
                if {key: verdict.get(key) for key in want} != want:
                    verdicts_wrong.append(f"{name} {verdict} for {want}")
    counts_wrong += slot_keys_placed(d, apps)
    run.check("counts", counts_wrong)
    if verdicts:
        run.check("verdicts", verdicts_wrong)
    run.check("shards", shards_placed(d, apps))


def slot_keys_placed(d: Deployment, apps: int) -> list[str]:
    """The ``slot:`` keys of numbered apps (the plan's start with 1), over every shard: exactly the plan's slots,
    each in its app's shard."""
    plan = d.plan
    want = {(plan.app_id(a), plan.slot_ms(s)) for a in range(apps) for s in range(plan.slots)}
    found: set[tuple[str, int]] = set()
    wrong = []
    pattern = glob_escape(d.prefix) + ("*slot:1*" if d.tags else "slot:1*")
    for key in d.redis.keys(pattern):
        shard, rest = d.split_key(key)
        kind, _, member = rest.partition(":")
        if kind != "slot":
            continue
        app_id, slot_ms = member.rpartition(":")[0], int(member.rpartition(":")[2])
        found.add((app_id, slot_ms))
        if shard != d.shard_index(app_id):
            wrong.append(f"{key} in shard {shard}, not its app's {d.shard_index(app_id)}")
    if found != want:
        wrong.append(f"{len(found)} slot keys of numbered apps for {len(want)} ({len(found - want)} not the plan's)")
    return wrong


def shards_placed(d: Deployment, apps: int) -> list[str]:
    """Every shard is a namespace (its marker) holding the plan's apps of that shard and no other (``apps``)."""
    plan = d.plan
    want: list[set[str]] = [set() for _ in d.shards]
    for a in range(apps):
        want[d.shard_index(plan.app_id(a))].add(plan.app_id(a))
    problems = []
    metas = d.per_shard("hget", "meta", "generation")
    for index, (members, meta) in enumerate(zip(d.per_shard("smembers", "apps"), metas, strict=True)):
        if meta is None:
            problems.append(f"shard {index} ({d.shards[index].prefix}) has no marker")
        if members - {FLUSH_APP} != want[index]:
            problems.append(f"shard {index}: {len(members - {FLUSH_APP})} apps for {len(want[index])}")
        if FLUSH_APP in members and index != d.shard_index(FLUSH_APP):
            problems.append(f"shard {index} holds app {FLUSH_APP}, of shard {d.shard_index(FLUSH_APP)}")
    if len(set(metas)) > 1:
        problems.append(f"the shards' generations differ: {metas}")
    return problems


def close_phase(d: Deployment, run: Run, profile_dir: Path | None) -> None:
    """Flush stream time past every slot; time the closer until every verdict is published, then until idle."""
    plan = d.plan
    slots = run.apps * plan.slots
    samplers = []
    if profile_dir is not None:
        samplers = [py_spy(w.proc.pid, profile_dir / f"close-w{i}.txt") for i, w in enumerate(d.workers)]
    cpu_before = [w.cpu_s() for w in d.workers]
    busy0, total0 = machine_busy()
    redis0, broker0 = d.redis.cpu_seconds(), broker_cpu_s()
    flushed_at = time.monotonic()
    flush_stream_time(d.settings, plan, plan.flush_ms)
    first_closed = d.wait("a first slot closed", lambda: d.data_open() < slots, every_s=0.05)
    published = d.wait("every verdict committed and published", lambda: d.data_open() == 0 and not d.outbox())
    idle = d.wait("the closer idle (ledgers done)", d.closer_idle, every_s=0.05)
    cpu = [w.cpu_s() - c for w, c in zip(d.workers, cpu_before, strict=True)]
    busy1, total1 = machine_busy()
    redis_cpu, broker1 = d.redis.cpu_seconds() - redis0, broker_cpu_s()
    for sampler in samplers:
        stop_py_spy(sampler)
    counted_at = d.counted_at
    ticks = [tick for w in d.workers for tick in w.ticks()]
    ticks = [tick for tick in ticks if tick[1] > 0]
    ticks.sort()
    gaps = [b[0] - a[0] for a, b in zip(ticks, ticks[1:], strict=False)]
    run.figures["close"] = {
        "slots": slots,
        "seconds": idle - counted_at,
        "slots_per_s": slots / (idle - counted_at),
        "seconds_to_published": published - counted_at,
        "slots_per_s_to_published": slots / (published - counted_at),
        "flush_after_counted_s": flushed_at - counted_at,
        "first_closed_after_flush_s": first_closed - flushed_at,
        "ledgers_after_published_s": idle - published,
        "worker_cpu_s": cpu,
        "machine_cpu_pct_of_all_cores": 100 * (busy1 - busy0) / max(1, total1 - total0),
        "redis_cpu_s": redis_cpu,
        "broker_cpu_s": None if broker0 is None or broker1 is None else broker1 - broker0,
        "ticks_closing": len(ticks),
        "slots_per_tick_max": max((n for _, n in ticks), default=0),
        "tick_interval_s_mean": statistics.fmean(gaps) if gaps else None,
        "tick_interval_s_max": max(gaps) if gaps else None,
    }
    verdict_records = sum(end_offsets(d.settings, [d.settings.topics.verdicts]).values())
    run.check("verdict records", [] if verdict_records == slots else [f"{verdict_records} records for {slots} slots"])
    letters = sum(end_offsets(d.settings, [d.settings.topics.dead_letter]).values())
    run.check("dead letters", [] if letters == 0 else [f"{letters} dead letters"])


def idle_phase(d: Deployment, run: Run, seconds: float, profile_dir: Path | None) -> None:
    """A quiet stream: each worker's CPU over ``seconds``, with the machine's and Redis's over the same window."""
    time.sleep(SETTLE_S)
    applied = d.applied_records()
    samplers = []
    if profile_dir is not None:
        samplers = [py_spy(w.proc.pid, profile_dir / f"idle-w{i}.txt", seconds) for i, w in enumerate(d.workers)]
    before = [w.cpu_s() for w in d.workers]
    busy0, total0 = machine_busy()
    redis0 = d.redis.cpu_seconds()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu = [w.cpu_s() - b for w, b in zip(d.workers, before, strict=True)]
    busy1, total1 = machine_busy()
    for sampler in samplers:
        sampler.wait(seconds + 60)
    for worker in d.workers:
        worker.check()
    run.figures["idle"] = {
        "seconds": elapsed,
        "worker_cpu_pct": [100 * c / elapsed for c in cpu],
        "worker_cpu_pct_max": max(100 * c / elapsed for c in cpu),
        "machine_cpu_pct_of_all_cores": 100 * (busy1 - busy0) / max(1, total1 - total0),
        "cores": os.cpu_count(),
        "redis_cpu_pct": 100 * (d.redis.cpu_seconds() - redis0) / elapsed,
    }
    run.check("quiet stream", [] if d.applied_records() == applied else ["records were counted while idle"])


def metrics_phase(d: Deployment, run: Run) -> None:
    """Scrape each worker's /metrics: series, app series, bytes, seconds; the app figures against the truth.

    Every worker exporting app series must export every app, with the truth's slots by outcome and calls;
    at least one must (all of them before issue 19, the group's leader alone after).
    """
    plan = d.plan
    per_worker = []
    problems: list[str] = []
    expected_bad = sum(
        judge_slot(plan.expected(a, s), d.settings.policy).unavailable
        for a in range(run.apps)
        for s in range(plan.slots)
    )
    for index, worker in enumerate(d.workers):
        scrapes = []
        for _ in range(SCRAPES):
            body, seconds = worker.scrape()
            scrapes.append((body, seconds))
            time.sleep(1)
        body = scrapes[-1][0]
        samples = [line for line in body.splitlines() if line and not line.startswith("#")]
        app_samples = [line for line in samples if 'app="' in line]
        apps = {m for line in app_samples for m in re.findall(r'app="([^"]*)"', line)} - {FLUSH_APP}
        closed: Counter[str] = Counter()
        calls = 0
        for line in app_samples:
            if f'app="{FLUSH_APP}"' in line:
                continue
            value = int(float(line.rsplit(" ", 1)[1]))
            if line.startswith("sla_slots_closed_total{"):
                outcome = re.search(r'outcome="([^"]*)"', line)
                closed[outcome[1] if outcome else "?"] += value
            elif line.startswith("sla_calls_total{"):
                calls += value
        exporting = bool(app_samples)
        if exporting:  # a worker exporting app series (every worker, or the group's leader alone) has them all right
            if len(apps) != run.apps:
                problems.append(f"worker {index}: {len(apps)} apps exported for {run.apps}")
            want = {"good": run.apps * plan.slots - expected_bad, "bad": expected_bad, "exempt": 0}
            if {key: closed[key] for key in want} != want:
                problems.append(f"worker {index}: slots closed by outcome {dict(closed)} for {want}")
            if calls != run.apps * plan.slots * plan.requests:
                problems.append(f"worker {index}: sla_calls_total {calls} for {run.apps * plan.slots * plan.requests}")
        per_worker.append(
            {
                "exports_apps": exporting,
                "series": len(samples),
                "app_series": len(app_samples),
                "apps": len(apps),
                "series_per_app": len(app_samples) / max(1, len(apps)),
                "bytes": len(body.encode()),
                "scrape_s": [s for _, s in scrapes],
                "scrape_s_median": statistics.median(s for _, s in scrapes),
            }
        )
    if not any(w["exports_apps"] for w in per_worker):
        problems.append("no worker exports the app series")
    run.figures["metrics"] = {
        "per_worker": per_worker,
        "workers_exporting_apps": sum(w["exports_apps"] for w in per_worker),
        "series_summed": sum(w["series"] for w in per_worker),
        "app_series_summed": sum(w["app_series"] for w in per_worker),
        "bytes_summed": sum(w["bytes"] for w in per_worker),
        "scrape_s_max_median": max(w["scrape_s_median"] for w in per_worker),
        "series_per_app": max(w["series_per_app"] for w in per_worker),
    }
    run.check("metrics", problems)


def weigh(d: Deployment, sample: int) -> dict[str, dict[str, float]]:
    """The run's keys by kind: how many, and their bytes by ``MEMORY USAGE`` (all, or a sample times the count).

    The flush app's keys are left out; the namespace's shared keys (``open``, ``apps``...) are in, those of
    every shard (kinds are named after the shard's prefix: ``slot``, not ``{s0.0}:slot``).
    """
    by_kind: dict[str, list[str]] = {}
    for key in d.redis.keys(glob_escape(d.prefix) + "*"):
        parts = d.split_key(key)[1].split(":", 2)
        if len(parts) > 1 and parts[1] == FLUSH_APP:
            continue  # the flush events' own keys (their slots stay open)
        by_kind.setdefault(parts[0], []).append(key)
    weights = {}
    rng = random.Random(7)
    for kind, keys in sorted(by_kind.items()):
        picked = keys if len(keys) <= sample else rng.sample(keys, sample)
        sizes = [
            size or 0 for size in d.read(lambda pipe, picked=picked: [pipe.memory_usage(k, samples=0) for k in picked])
        ]
        weights[kind] = {"keys": len(keys), "bytes": sum(sizes) * len(keys) / max(1, len(picked))}
    return weights


def held_ids(d: Deployment, apps: int) -> tuple[int, list[str]]:
    """Event ids held in the plan's id sets, and the sets whose size is not the plan's."""
    plan = d.plan
    total, wrong = 0, []
    slots = [(a, s) for a in range(apps) for s in range(plan.slots)]
    for start in range(0, len(slots), 5_000):

        def fill(pipe: Any, chunk: list[tuple[int, int]] = slots[start : start + 5_000]) -> None:
            for a, s in chunk:
                k = d.keys_of(plan.app_id(a))
                pipe.scard(k.ids(plan.app_id(a), plan.slot_ms(s), "requests"))
                pipe.scard(k.ids(plan.app_id(a), plan.slot_ms(s), "successes"))

        replies = iter(d.read(fill))
        for a, s in slots[start : start + 5_000]:
            expected = plan.expected(a, s)
            requests, successes = next(replies), next(replies)
            total += requests + successes
            if (requests, successes) != (expected.requests, expected.successes):
                wrong.append(f"{plan.app_id(a)}:{plan.slot_ms(s)} ids {requests}/{successes} for {expected}")
    return total, wrong


def memory_phase(d: Deployment, run: Run, before: int, sample: int) -> dict[str, Any]:
    """Redis with every slot closed and its ids held: ``used_memory`` and the run's keys by kind."""
    ids, wrong = held_ids(d, run.apps)
    run.check("held ids", wrong + ([] if ids == run.events else [f"{ids} ids held for {run.events} events"]))
    return {
        "used_memory_before": before,
        "used_memory_held": d.redis.used_memory(),
        "ids_held": ids,
        "held": weigh(d, sample),
    }


def release_phase(d: Deployment, run: Run, memory: dict[str, Any], sample: int) -> None:
    """Move stream time past ``dedup_hold``: time the closer releasing every id set; Redis's memory after."""
    plan = d.plan
    flushed_at = time.monotonic()
    flush_stream_time(d.settings, plan, plan.release_ms)
    released = d.wait("every id set released", lambda: d.ids_held() == 0, every_s=0.2)
    memory["release_s"] = released - flushed_at
    memory["slots_released_per_s"] = run.apps * plan.slots / (released - flushed_at)
    d.wait("the closer idle", d.closer_idle)
    memory["used_memory_after"] = d.redis.used_memory()
    memory["released"] = weigh(d, sample)
    slots = run.apps * plan.slots
    held, after = memory["held"], memory["released"]
    ids_bytes = held.get("ids", {}).get("bytes", 0.0)
    run_bytes = sum(kind["bytes"] for kind in after.values())
    memory |= {
        "bytes_per_held_id": ids_bytes / max(1, memory["ids_held"]),
        "bytes_per_held_id_info": (memory["used_memory_held"] - memory["used_memory_after"])
        / max(1, memory["ids_held"]),
        "bytes_per_closed_slot": run_bytes / slots,
        "bytes_per_closed_slot_slot_and_verdict": sum(
            after.get(kind, {}).get("bytes", 0.0) for kind in ("slot", "verdict")
        )
        / slots,
        "bytes_per_closed_slot_info": (memory["used_memory_after"] - memory["used_memory_before"]) / slots,
        "ids_left": after.get("ids", {}).get("keys", 0),
    }
    run.check("ids released", [] if not memory["ids_left"] else [f"{memory['ids_left']} id sets left"])
    run.figures["memory"] = memory


def measure_run(
    shape: str,
    workers: int,
    apps: int,
    target: RedisTarget,
    args: argparse.Namespace,
    ctx: Context,
    raw: dict[str, float],
) -> Run:
    """One run: the plan's events to topics of its own, counted by ``workers`` workers on ``target``, ...,
    cleaned up.

    The raw reader reads the first run's topics of each shape (``raw``).
    """
    plan = ctx.plan
    tag = f"{ctx.tag}-{shape}-{workers}w-{target.name}"
    run = Run(shape, workers, apps, plan.events(apps), 0, target.name, target.shards)
    print(f"{run.name}: {run.events:,} events of {apps:,} apps; topics, group and key prefix {tag}", flush=True)
    config = write_config(ctx.directory, tag, tag, plan, target)
    d = Deployment(config, target, plan, args.timeout)
    profile_dir = None
    if args.profile:
        profile_dir = OUT_DIR / f"profile-{ctx.stamp}-{shape}-{workers}w-{target.name}"
        profile_dir.mkdir(parents=True)
    full = shape == "array"
    retries_before = len(REDIS_RETRIES)
    identity = target.identity()
    try:
        produced_at = time.monotonic()
        run.records = sum(produce_plan(d.settings, plan, shape, apps).values())
        run.figures["produce_s"] = time.monotonic() - produced_at
        print(f"    produced {run.records:,} records in {run.figures['produce_s']:.0f} s", flush=True)
        if shape not in raw:
            raw[shape] = run.events / asyncio.run(raw_reader(d.settings))
            print(f"    raw aiokafka reader: {raw[shape]:,.0f} events/s", flush=True)
        before = target.used_memory()
        count_phase(d, run, run.records, workers)
        c = run.figures["count"]
        print(f"    counted: {c['events_per_s']:,.0f} events/s ({c['seconds']:.1f} s)", flush=True)
        if full:
            close_phase(d, run, profile_dir)
            print(f"    closed: {run.figures['close']['slots_per_s']:,.0f} slots/s", flush=True)
        check_counts(d, run, apps, verdicts=full)
        if full:
            memory = memory_phase(d, run, before, args.memory_sample)
            idle_phase(d, run, args.idle_seconds, profile_dir)
            print(f"    idle: {run.figures['idle']['worker_cpu_pct']} % of a core", flush=True)
            metrics_phase(d, run)
            release_phase(d, run, memory, args.memory_sample)
    except Exception as error:  # noqa: BLE001 - record it, clean up, go on with the next run
        run.error = f"{type(error).__name__}: {error}"
        print(f"    FAILED: {run.error}", flush=True)
        for index, worker in enumerate(d.workers):
            kept = OUT_DIR / f"{ctx.stamp}-{shape}-{workers}w-{target.name}-w{index}.log"
            kept.write_bytes(worker.log.read_bytes())
            print(f"    worker log kept: {kept.relative_to(REPO)}", flush=True)
    finally:
        d.stop()
        if profile_dir is not None:
            for path in sorted(profile_dir.glob("*.txt")):
                if path.stat().st_size:
                    print(f"    profile {path.relative_to(REPO)}:")
                    print_profile(path)
                    print_busy_profile(path)
        if not args.keep:
            try:
                target.delete_prefix(d.prefix)
            except Exception as error:  # noqa: BLE001 - leftovers are harmless; say so and go on
                print(f"    (Redis keys {d.prefix}* not all removed: {type(error).__name__}: {error})", flush=True)
            delete_topics(d.settings, tag, [tag])
        disturbed(run, target, identity, REDIS_RETRIES[retries_before:])
    return run


def disturbed(run: Run, target: RedisTarget, identity: list[str], retries: list[str]) -> None:
    """Record whether the run's Redis failed meanwhile (a read retried) or a master changed (restarted, failed
    over): the run's timed figures are then disturbed (its checks still hold)."""
    try:
        after = target.identity()
    except Exception as error:  # noqa: BLE001 - Redis down at the end: that is the news
        after = [f"unknown: {type(error).__name__}: {error}"]
    run.figures["redis_retries"] = retries
    if after != identity:
        run.figures["redis_masters_changed"] = {"before": identity, "after": after}
    if run.disturbed:
        print(
            f"    note: Redis disturbed during the run ({len(retries)} reads retried, masters "
            f"{'changed' if after != identity else 'the same'}): its timed figures are not comparable",
            flush=True,
        )


# --------------------------------------------------------------------------- output


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " / ".join(fmt(v, spec) for v in value)
    return format(value, spec)


def machine_rows(phase: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Where the rest of the machine's CPU went over a phase (none for figures saved before it was measured)."""
    if "redis_cpu_s" not in phase:
        return []
    share = f"{phase['machine_cpu_pct_of_all_cores']:.0f}% of {os.cpu_count()} cores"
    others = f"Redis {phase['redis_cpu_s']:.1f} s, Kafka broker {fmt(phase['broker_cpu_s'], '.1f')} s of CPU"
    return [("  machine meanwhile", f"{share}; {others}", "")]


def target_note(key: str, value: float | None) -> str:
    if value is None or key not in TARGETS:
        return ""
    op, bound, _ = TARGETS[key]
    met = value < bound if op == "<" else value >= bound
    return f"{'met' if met else 'NOT met'} ({op} {bound:g})"


def print_run(run: Run, raw_rate: float | None) -> None:
    f = run.figures
    print(f"\n{run.name}: {run.apps:,} apps, {run.events:,} events in {run.records:,} records")
    rows: list[tuple[str, str, str]] = []
    if "count" in f:
        c = f["count"]
        ratio = f"  (raw reader {raw_rate:,.0f}/s: x{c['events_per_s'] / raw_rate:.2f})" if raw_rate else ""
        rows += [
            ("events/s counted", fmt(c["events_per_s"]) + ratio, ""),
            ("  from the workers' start", f"{fmt(c['events_per_s_from_start'])} ({c['seconds_from_start']:.1f} s)", ""),
            ("  worker CPU per event (µs)", fmt(c["cpu_us_per_event"], ".1f"), ""),
            *machine_rows(c),
            *([("  note", c["note"], "")] if c.get("note") else []),
            ("  peak RSS per worker (MB)", fmt(c["peak_rss_mb"]), ""),
        ]
    if "close" in f:
        c = f["close"]
        rows += [
            (
                "slots closed/s",
                f"{fmt(c['slots_per_s'])} ({c['slots']:,} slots in {c['seconds']:.1f} s after the last event counted)",
                target_note("slots_per_s", c["slots_per_s"]),
            ),
            (
                "  to every verdict published",
                f"{fmt(c['slots_per_s_to_published'])}/s ({c['seconds_to_published']:.1f} s)",
                "",
            ),
            ("  ledgers after that (s)", fmt(c["ledgers_after_published_s"], ".1f"), ""),
            (
                "  closer ticks that closed",
                f"{c['ticks_closing']}, up to {c['slots_per_tick_max']:,} slots, "
                f"every {fmt(c['tick_interval_s_mean'], '.2f')} s (max {fmt(c['tick_interval_s_max'], '.2f')} s)",
                "",
            ),
            ("  worker CPU while closing (s)", fmt(c["worker_cpu_s"], ".1f"), ""),
            *machine_rows(c),
        ]
    if "idle" in f:
        i = f["idle"]
        rows += [
            (
                "worker idle CPU (% of a core)",
                f"{fmt(i['worker_cpu_pct'], '.1f')} over {i['seconds']:.0f} s",
                target_note("idle_cpu_pct", i["worker_cpu_pct_max"]),
            ),
            (
                "  machine, Redis meanwhile (%)",
                f"{i['machine_cpu_pct_of_all_cores']:.0f}% of {i['cores']} cores, "
                f"Redis {i['redis_cpu_pct']:.1f}% of a core",
                "",
            ),
        ]
    if "metrics" in f:
        m = f["metrics"]
        per = m["per_worker"]
        rows += [
            (
                "/metrics series per scrape",
                f"{fmt([w['series'] for w in per])} (app series {fmt([w['app_series'] for w in per])}, "
                f"{m['series_per_app']:.1f} per app); summed {m['series_summed']:,}",
                "",
            ),
            ("  bytes per scrape", f"{fmt([w['bytes'] for w in per])}; summed {m['bytes_summed']:,}", ""),
            (
                "  scrape seconds (median)",
                fmt([w["scrape_s_median"] for w in per], ".3f"),
                target_note("scrape_s", m["scrape_s_max_median"]),
            ),
        ]
    if "memory" in f:
        m = f["memory"]
        mb = 1 << 20
        rows += [
            (
                "Redis used_memory (MB)",
                f"before {m['used_memory_before'] / mb:.1f}, ids held {m['used_memory_held'] / mb:.1f}, "
                f"released {m['used_memory_after'] / mb:.1f}",
                "",
            ),
            (
                "  bytes per held event id",
                f"{m['bytes_per_held_id']:.0f} (MEMORY USAGE of the id sets); {m['bytes_per_held_id_info']:.0f} (INFO, "
                f"drop at the release)",
                "",
            ),
            (
                "  bytes per closed slot",
                f"{m['bytes_per_closed_slot']:.0f} (all the run's keys; slot+verdict hashes "
                f"{m['bytes_per_closed_slot_slot_and_verdict']:.0f}); "
                f"{m['bytes_per_closed_slot_info']:.0f} (INFO, growth)",
                "",
            ),
            ("  id sets released", f"{m['slots_released_per_s']:,.0f} slots/s ({m['release_s']:.1f} s)", ""),
        ]
    width = max(len(r[0]) for r in rows) if rows else 0
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value}{'   [' + note + ']' if note else ''}")
    for name, result in run.checks.items():
        if result != "ok":
            print(f"  CHECK {name}: {result}")
    if run.error:
        print(f"  FAILED: {run.error}")
    if run.disturbed:
        print(
            f"  Redis disturbed meanwhile: {len(f['redis_retries'])} reads retried"
            + (", a master restarted or failed over" if f.get("redis_masters_changed") else "")
            + " (timed figures not comparable)"
        )


HEADLINE = (
    ("count", "events_per_s", "events/s"),
    ("close", "slots_per_s", "slots closed/s"),
    ("idle", "worker_cpu_pct_max", "idle CPU %"),
    ("metrics", "series_summed", "series summed"),
    ("metrics", "scrape_s_max_median", "scrape s"),
    ("memory", "bytes_per_held_id", "B/held id"),
    ("memory", "bytes_per_closed_slot", "B/closed slot"),
)


def print_summary(runs: list[Run]) -> None:
    """Every run's headline figures, then issue 19's figures side by side on each Redis."""
    print(f"\n{'run':<24}" + "".join(f"{label:>15}" for _, _, label in HEADLINE))
    for run in runs:
        cells = []
        for phase, key, _ in HEADLINE:
            value = run.figures.get(phase, {}).get(key)
            cells.append(fmt(value, ".3f" if key == "scrape_s_max_median" else ",.1f" if "cpu" in key else ",.0f"))
        print(f"{run.name + (' *' if run.disturbed else ''):<24}" + "".join(f"{cell:>15}" for cell in cells))
    if any(run.disturbed for run in runs):
        print("* Redis failed or a master changed during the run: its timed figures are disturbed")
    runs_of: dict[tuple[str, str], dict[int, Run]] = {}
    for run in runs:
        runs_of.setdefault((run.shape, run.redis_label), {})[run.workers] = run
    for (shape, label), by_workers in runs_of.items():
        if 1 in by_workers and 2 in by_workers:
            one, two = (by_workers[n].figures.get("count", {}).get("events_per_s") for n in (1, 2))
            if one and two:
                print(f"{shape} on {label}: 2 workers / 1 worker events/s x{two / one:.2f}")
    labels = list(dict.fromkeys(run.redis_label for run in runs))
    arrays = [run for run in runs if run.shape == "array"]
    print(
        f"\nissue 19 at {max((run.apps for run in arrays or runs), default=0):,} apps "
        f"(this machine: {os.cpu_count()} cores, shared with whatever else runs; see the load average above):"
    )

    def figure(phase: str, key: str, spec: str) -> str:
        cells = []
        for label in labels:
            found = [
                f"{run.workers}w {fmt(run.figures[phase][key], spec)}"
                for run in arrays
                if run.redis_label == label and key in run.figures.get(phase, {})
            ]
            if found:
                cells.append(f"{label} " + ", ".join(found))
        return "; ".join(cells) or "-"

    print(f"  idle worker CPU (% of a core, each worker): {figure('idle', 'worker_cpu_pct', '.1f')}")
    print(f"  slots closed/s: {figure('close', 'slots_per_s', ',.0f')}")
    two = [run for run in arrays if run.workers == 2 and "metrics" in run.figures]
    print(
        "  /metrics series per scrape, 2 workers summed: "
        + (
            "; ".join(
                f"{run.redis_label} {run.figures['metrics']['series_summed']:,} (app series "
                f"{run.figures['metrics']['app_series_summed']:,} = {run.apps:,} apps x "
                f"{run.figures['metrics']['app_series_summed'] / max(1, run.apps):.1f})"
                for run in two
            )
            or "- (no 2-worker array run)"
        )
    )
    print(f"  Redis bytes per held event id: {figure('memory', 'bytes_per_held_id', ',.0f')}")
    print(f"  Redis bytes per closed slot: {figure('memory', 'bytes_per_closed_slot', ',.0f')}")
    single = {run.shape: run for run in runs if run.redis == "single" and run.workers == 1}
    for run in runs:
        if run.redis != "cluster" or run.workers != 1 or run.shape not in single:
            continue
        counts = [r.figures.get("count", {}) for r in (run, single[run.shape])]
        mine, theirs = (c.get("events_per_s") for c in counts)
        if mine and theirs:
            ratio = mine / theirs
            short = any(c.get("note") or c["seconds"] < MIN_COUNT_S for c in counts)
            verdict = "met" if ratio >= 1 - CLUSTER_RATIO_TOLERANCE else "NOT met"
            print(
                f"  counting, 1 worker, {run.shape}: {run.redis_label} / {single[run.shape].redis_label} "
                f"x{ratio:.2f} ({mine:,.0f} / {theirs:,.0f} events/s)   "
                f"[{verdict} (>= {1 - CLUSTER_RATIO_TOLERANCE:.2f})"
                + (f"; counted in under {MIN_COUNT_S:.0f} s: too short to compare, use more apps" if short else "")
                + "]"
            )


def compare(runs: list[Run], path: Path) -> None:
    """This invocation's headline figures over an earlier one's, run by run (same shape, workers, Redis)."""
    earlier = {(r["shape"], r["workers"], r["redis"]): r for r in json.loads(path.read_text())["runs"]}
    print(f"\nagainst {path} (this / that):")
    for run in runs:
        other = earlier.get((run.shape, run.workers, run.redis))
        if other is None:
            continue
        cells = []
        for phase, key, label in HEADLINE:
            new, old = run.figures.get(phase, {}).get(key), other["figures"].get(phase, {}).get(key)
            if new is not None and old:
                cells.append(f"{label} x{new / old:.2f}")
        apps = "" if other["apps"] == run.apps else f" (that run had {other['apps']:,} apps)"
        print(f"  {run.name}{apps}: " + ", ".join(cells))


# --------------------------------------------------------------------------- main


def git(where: Path, *args: str) -> str:
    """``git ARGS`` in ``where`` (the measured package's tree; empty when it is not in one)."""
    done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def parse_shards(spec: str) -> dict[str, int]:
    """``--shards``: ``N`` for every Redis, or ``single=N,cluster=M`` (each missing one: its default)."""
    shards = {"single": 1, "cluster": 12}
    if spec.strip().isdigit():
        shards = dict.fromkeys(shards, int(spec))
    else:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, _, count = part.partition("=")
            if kind.strip() not in shards or not count.strip().isdigit():
                raise ValueError(f"want N or single=N,cluster=M, got {spec!r}")
            shards[kind.strip()] = int(count)
    if not all(1 <= n <= 1024 for n in shards.values()):
        raise ValueError(f"shards between 1 and 1024, got {spec!r}")
    return shards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000, help="apps in the plan (default 10,000)")
    parser.add_argument("--slots-per-app", type=int, default=24, help="5-minute slots per app (default 24)")
    parser.add_argument("--requests-per-slot", type=int, default=10, help="requests per slot (default 10)")
    parser.add_argument("--workers", type=int, choices=(1, 2), action="append", help="1 or 2 (default: 1, then 2)")
    parser.add_argument("--shapes", default="array,single", help="record shapes, of array,single (default both)")
    parser.add_argument(
        "--single-apps", type=int, default=2_000, help="apps of the single-event shape (default 2,000; 0: all)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the idle window (default 60)")
    parser.add_argument("--timeout", type=float, default=1_800.0, help="bound on each wait (default 1,800 s)")
    parser.add_argument(
        "--memory-sample", type=int, default=2_000, help="keys weighed per kind with MEMORY USAGE (default 2,000)"
    )
    parser.add_argument(
        "--redis",
        default="single,cluster",
        help="the Redis of the runs, of single,cluster (default both: every shape and worker count on each)",
    )
    parser.add_argument(
        "--shards",
        default="single=1,cluster=12",
        help="[redis] shards of the workers: N (every Redis) or single=N,cluster=M (default single=1,cluster=12)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on every worker while closing and idle")
    parser.add_argument("--compare", type=Path, help="an earlier .run/bench-scale/*.json to compare with")
    parser.add_argument("--keep", action="store_true", help="keep each run's topics and Redis keys")
    parser.add_argument("--label", default="", help="a note kept with the figures (e.g. which code was measured)")
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not shapes or set(shapes) - {"array", "single"}:
        parser.error("--shapes takes array, single or both")
    kinds = [k.strip() for k in args.redis.split(",") if k.strip()]
    if not kinds or set(kinds) - {"single", "cluster"} or len(set(kinds)) < len(kinds):
        parser.error("--redis takes single, cluster or both")
    try:
        shards = parse_shards(args.shards)
    except ValueError as error:
        parser.error(f"--shards: {error}")
    if args.profile and not PY_SPY.exists():
        sys.exit(f"bench-scale: {PY_SPY} not found; run `make bench-venv` (or leave out --profile)")
    worker_counts = args.workers or [1, 2]
    base = load_settings()
    plan = Plan.make(
        args.apps, args.slots_per_app, args.requests_per_slot, base.dedup_hold_ms // 60_000, base.policy.timezone
    )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    tag = f"bscale-{uuid.uuid4().hex[:8]}"
    targets = [redis_target(kind, base, shards[kind]) for kind in kinds]
    ctx = Context(plan, targets, Path(tempfile.mkdtemp(prefix="sla-bench-scale-")), stamp, tag)
    started = time.monotonic()
    print(
        f"bench-scale {tag}: {args.apps:,} apps x {plan.slots} slots x {plan.requests} requests, shapes {shapes}, "
        f"workers {worker_counts}, Redis {'; '.join(t.describe() for t in targets)}; code {STREAM_DIR} "
        f"({git(STREAM_DIR, 'rev-parse', '--short', 'HEAD') or 'not in git'}); {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    runs: list[Run] = []
    raw: dict[str, float] = {}
    meta: dict[str, Any] = {
        "tag": tag,
        "started": stamp,
        "apps": args.apps,
        "slots_per_app": plan.slots,
        "requests_per_slot": plan.requests,
        "single_apps": args.single_apps,
        "shapes": shapes,
        "workers": worker_counts,
        "redis": [{"redis": t.name, "shards": t.shards, "url": t.url} for t in targets],
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "plan": plan.__dict__,
        "label": args.label,
        "stream_package": str(STREAM_DIR),
        "commit": git(STREAM_DIR, "rev-parse", "HEAD"),
        "stream_changed_from_commit": bool(git(STREAM_DIR, "status", "--porcelain", ".")),
    }
    try:
        for shape in shapes:
            apps = args.apps if shape == "array" or not args.single_apps else min(args.apps, args.single_apps)
            for target in targets:
                for workers in worker_counts:
                    try:
                        runs.append(measure_run(shape, workers, apps, target, args, ctx, raw))
                    except Exception as error:  # noqa: BLE001 - a run that could not even start; go on
                        failed = Run(shape, workers, apps, plan.events(apps), 0, target.name, target.shards)
                        failed.error = f"{type(error).__name__}: {error}"
                        runs.append(failed)
                    print_run(runs[-1], raw.get(shape))
    finally:
        meta["seconds"] = time.monotonic() - started
        meta["loadavg_end"] = os.getloadavg()
        result = {"meta": meta, "raw_events_per_s": raw, "runs": [run.__dict__ for run in runs]}
        out = OUT_DIR / f"{stamp}-{args.apps}apps.json"
        out.write_text(json.dumps(result, indent=2, default=str))
        (OUT_DIR / "latest.json").write_text(out.read_text())
        for target in targets:
            target.close()
    print_summary(runs)
    if args.compare:
        compare(runs, args.compare)
    wrong = [f"{run.name}: {name}" for run in runs for name, result in run.checks.items() if result != "ok"]
    failed = [run.name for run in runs if run.error]
    print(f"\nfigures: {out.relative_to(REPO)}; {meta['seconds'] / 60:.1f} min")
    if wrong:
        print(f"counts differ from the truth: {wrong}")
        return 1
    if failed:
        print(f"runs failed: {failed}")
        return 2
    print("every count and verdict equals the truth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
