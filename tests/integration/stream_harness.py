"""A harness for the live-stream tests: one isolated deployment per test, real Kafka, real Redis, real workers.

Each :class:`Deployment` has its own settings file (unique topic names,
consumer group and Redis key prefix), creates its topics, starts ``sla-stream``
worker processes (each logging to a file under the test's ``tmp_path``),
produces events as the event contract says (one event or a JSON array per
record, without ``"type"``), waits by bounded polling until Redis shows every
produced offset applied and every slot closed, and reads back what the worker
left: slot counts, verdicts, the month ledger, the verdicts and dead-letter
topics. At teardown it kills its workers (SIGTERM, then SIGKILL), deletes its
topics and consumer group, and removes its Redis keys; when the test failed,
the tail of each worker's log is printed.

The truth a test compares against is computed from the produced events with
the pure core (:class:`stream.sla.counting.SlotTally`,
:func:`stream.sla.verdict.judge_slot`), never with the code under test.

Tests use it through the ``stream_deployment`` fixture (a factory), made
available by ``pytest_plugins = ["stream_harness"]`` in each test module.

A deployment may run on a Redis Cluster (``stream_deployment(cluster_url=...,
shards=N)``): its settings say ``[redis] cluster = true`` and ``shards = N``,
and every read of the live state here goes through a ``redis.cluster.RedisCluster``
client and each shard's key names (:attr:`Deployment.shard_keys`), combined as
the workers combine them (an input partition's applied offset and stream time
are the least of the shards').
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterUnreachableError, SlotNotCoveredError

from stream.config import Settings, load_settings
from stream.events import Event, RequestEvent, SuccessEvent, to_line, to_record
from stream.live.clock import ClockTiming, is_due
from stream.live.shards import shard_of, shard_prefixes
from stream.live.store import Keys
from stream.sla.counting import SlotTally
from stream.sla.slots import SLOT_MS, day_start_ms, local_date, slot_start_ms
from stream.sla.verdict import SlotCounts, judge_slot
from stream.tools.simulate import Incident, TrafficPlan, generate

INPUT_PARTITIONS = 4
FLUSH_APP = "flush"
"""The app of the events :meth:`Deployment.flush_stream_time` sends to move stream time on."""
WORKER_ENV = {
    # Faust reads these from the environment. A killed worker's partitions move
    # to a live one after the session timeout; Faust's default (60 s) would make
    # every kill in these tests cost a minute. The broker's minimum is 6 s.
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "PYTHONUNBUFFERED": "1",
}
_CONSOLE_SCRIPT = Path(sys.executable).with_name("sla-stream")
SLA_STREAM = [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "stream.cli"]
"""The ``sla-stream`` command of this environment (its console script, or the module when not installed)."""


def tp_name(topic: str, partition: int) -> str:
    """How the store names an input partition (``topic:partition``)."""
    return f"{topic}:{partition}"


def partition_for(key: str, partitions: int = INPUT_PARTITIONS) -> int:
    """A stable partition for a record key, so two deployments can get the very same partitioning."""
    return zlib.crc32(key.encode()) % partitions


def idle_lag_before(ts_ms: int) -> int:
    """An ``idle_lag_seconds`` so large that idle partitions never move stream time past ``ts_ms``.

    With it, only event time closes slots (the flush events of
    :meth:`Deployment.flush_stream_time` close the last ones), so a test can
    say exactly which slots must be closed when.
    """
    return (int(time.time() * 1000) - ts_ms) // 1000 + 86_400


def event_key(event: Event) -> str:
    """Records are keyed by user (producers may key by app, room or user; the worker must not care)."""
    return event.user_id


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class OutRecord:
    """One Kafka record to produce: its topic (by kind), partition, key and raw value."""

    kind: str  # "request" / "success" / any topic setting name ("exemptions", ...)
    partition: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    """The record's timestamp (CreateTime); None: the producer's clock."""


def event_value(event: Event) -> bytes:
    return json.dumps(to_record(event), separators=(",", ":")).encode()


def array_value(events: Sequence[Event]) -> bytes:
    return json.dumps([to_record(e) for e in events], separators=(",", ":")).encode()


def single_records(events: Iterable[Event]) -> list[OutRecord]:
    """One record per event, keyed and partitioned by user."""
    return [OutRecord(e.kind, partition_for(event_key(e)), event_key(e).encode(), event_value(e)) for e in events]


def batched_records(
    events: Iterable[Event], batch: int, single_every: int = 0, stamped: bool = False
) -> list[OutRecord]:
    """JSON arrays of up to ``batch`` events per (kind, partition), in arrival order.

    With ``single_every`` N > 0, every Nth event travels alone in its own
    record instead, so a stream mixes both forms of the contract. With
    ``stamped``, each record's timestamp is its latest event's time, as if
    sent the moment its last event happened.
    """
    records: list[OutRecord] = []
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)

    def flush(kind: str, partition: int) -> None:
        group = pending.pop((kind, partition), [])
        if group:
            stamp = max(e.ts for e in group) if stamped else None
            records.append(OutRecord(kind, partition, f"batch-{partition}".encode(), array_value(group), stamp))

    for n, event in enumerate(events, start=1):
        partition = partition_for(event_key(event))
        if single_every and n % single_every == 0:
            flush(event.kind, partition)  # keep arrival order within the partition
            stamp = event.ts if stamped else None
            records.append(OutRecord(event.kind, partition, event_key(event).encode(), event_value(event), stamp))
            continue
        group = pending[(event.kind, partition)]
        group.append(event)
        if len(group) >= batch:
            flush(event.kind, partition)
    for kind, partition in list(pending):
        flush(kind, partition)
    return records


# --------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class Truth:
    """Expected counts and verdict flags per (app, slot), from the events with the pure core."""

    counts: dict[tuple[str, int], SlotCounts]

    @classmethod
    def of(cls, events: Iterable[Event], settings: Settings) -> Truth:
        tally = SlotTally(settings.policy.timezone)
        for e in events:
            tally.add(e.kind, e.app_id, e.event_id, e.counted_ts)
        return cls({(app, slot): c for app in tally.apps() for slot, c in tally.counts(app).items()})

    def unavailable(self, settings: Settings) -> set[tuple[str, int]]:
        return {key for key, c in self.counts.items() if judge_slot(c, settings.policy).unavailable}

    def data_quality(self, settings: Settings) -> set[tuple[str, int]]:
        return {key for key, c in self.counts.items() if judge_slot(c, settings.policy).data_quality_issue}


def slot_traffic(
    app_id: str, slot_ms: int, requests: int, successes: int, tag: str = "t"
) -> tuple[list[RequestEvent], list[SuccessEvent]]:
    """``requests`` requests spread over the slot, the first ``successes`` of them succeeding 200 ms later."""
    step = SLOT_MS // (requests + 1)
    reqs = [
        RequestEvent(f"r-{tag}-{app_id}-{slot_ms}-{i}", app_id, str(i % 7), f"u{i}", slot_ms + (i + 1) * step)
        for i in range(requests)
    ]
    oks = [success_for(r) for r in reqs[:successes]]
    return reqs, oks


def success_for(request: RequestEvent, ts: int | None = None) -> SuccessEvent:
    """The success of ``request``, reported at ``ts`` (by default 200 ms after it)."""
    serial = request.event_id.removeprefix("r-")
    return SuccessEvent(
        f"s-{serial}",
        request.event_id,
        request.app_id,
        request.room_id,
        request.user_id,
        request.ts + 200 if ts is None else ts,
        request.ts,
    )


def simulated_traffic(
    apps: Sequence[str],
    start_ms: int,
    minutes: int,
    incidents: Sequence[tuple[int, int, float, str]] = (),
    **plan: Any,
) -> tuple[TrafficPlan, list[Event]]:
    """The simulator's events for ``minutes`` from ``start_ms``, on the default SLA clock.

    ``incidents`` are ``(from_minute, to_minute, success_rate, app_id)``;
    ``plan`` gives the other :class:`TrafficPlan` fields (``peak_per_minute``, ``seed``, ...).
    """
    traffic = TrafficPlan(
        app_ids=tuple(apps),
        start_ms=start_ms,
        end_ms=start_ms + minutes * 60_000,
        tz=load_settings().policy.timezone,
        incidents=tuple(
            Incident(start_ms + a * 60_000, start_ms + b * 60_000, rate, app) for a, b, rate, app in incidents
        ),
        **plan,
    )
    return traffic, list(generate(traffic))


def hours_ago(hours: int) -> int:
    """The start of the slot ``hours`` hours before now (on the default SLA clock)."""
    return slot_start_ms(int(time.time() * 1000) - hours * 3_600_000, load_settings().policy.timezone)


def recent_slot(minutes_ago: int, settings: Settings) -> int:
    """The start of the slot ``minutes_ago`` minutes before now: recent enough to be live traffic."""
    return slot_start_ms(int(time.time() * 1000) - minutes_ago * 60_000, settings.policy.timezone)


def skip_near_a_month_boundary(settings: Settings, *, began_within_min: int = 0, ends_within_min: int = 0) -> None:
    """Skip a test reading the running month's gauges while its calendar month may not be the gauges' month.

    The worker's ``sla_month_*`` gauges follow event time's month, minutes
    behind the clock: traffic just after midnight on the 1st is last month's
    while the gauges show the new one, and a test started just before it sees
    them move to the next month part-way.
    """
    tz = settings.policy.timezone
    now_ms = int(time.time() * 1000)
    first_day = local_date(now_ms, tz).replace(day=1)
    next_first_day = (first_day + timedelta(days=31)).replace(day=1)
    if now_ms - day_start_ms(first_day, tz) < began_within_min * 60_000:
        pytest.skip(f"the month began less than {began_within_min} min ago: the gauges and the traffic's month differ")
    if day_start_ms(next_first_day, tz) - now_ms < ends_within_min * 60_000:
        pytest.skip(f"the month ends within {ends_within_min} min: the gauges would move to the next month")


def write_event_file(path: Path, events: Iterable[Event]) -> Path:
    """The events as a JSON Lines file with ``"type"`` (what ``sla-stream report`` reads)."""
    with path.open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(to_line(event) + "\n")
    return path


# --------------------------------------------------------------------------- workers


def terminate(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop a process the tests started: SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


class WorkerProcess:
    """One ``sla-stream worker`` subprocess, logging to its own file."""

    def __init__(
        self, name: str, config: Path, cwd: Path, log: Path, redis_url: str | None = None, args: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.log = log
        self.metrics_port = free_port()
        """Each worker serves /metrics on a port of its own (the default 9464 would clash between workers)."""
        env = {**os.environ, **WORKER_ENV, **({"REDIS_URL": redis_url} if redis_url else {})}
        with log.open("ab") as out:
            out.write(f"--- start {name} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [
                    *SLA_STREAM,
                    "worker",
                    "--config",
                    str(config),
                    "--metrics-port",
                    f"127.0.0.1:{self.metrics_port}",
                    *args,
                ],
                cwd=cwd,  # Faust writes its data directory in the working directory
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the worker dies at whatever instant it is in."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within ``timeout_s``."""
        terminate(self.proc, timeout_s)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines()[-lines:])

    def lines(self) -> list[str]:
        """Every line of the worker's log so far."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ["(no log)"]


class RedisServer:
    """A Redis server of a test's own (its own port and directory), to stop, kill, restart or wipe.

    Append-only persistence with ``appendfsync always`` (the project's own
    Redis runs the same way): a stop or a kill loses no acknowledged write.
    With ``aof=False`` it keeps only the snapshots :meth:`snapshot` writes,
    so a kill rolls it back to the last one (Redis "losing its last writes").
    """

    def __init__(self, root: Path, port: int, aof: bool = True) -> None:
        self.root = root
        self.port = port
        self.aof = aof
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root)]
            + ["--save", "", "--logfile", str(self.root / "redis.log"), *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise HarnessTimeout(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.1)
            finally:
                client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10)

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (what an operator's restart does)."""
        if self.proc is not None:
            terminate(self.proc, 30)

    def kill(self) -> None:
        """SIGKILL: whatever was not persisted is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def snapshot(self) -> None:
        """Write the whole dataset to disk now (SAVE): a kill after it comes back to this state."""
        client = self.client()
        try:
            client.save()
        finally:
            client.close()

    def wipe(self) -> None:
        """Delete everything the server persisted (it must be stopped): the next start is empty."""
        for path in self.root.iterdir():
            if path.name != "redis.log":
                if path.is_dir():
                    for inner in path.iterdir():
                        inner.unlink()
                    path.rmdir()
                else:
                    path.unlink()


# --------------------------------------------------------------------------- deployment


class HarnessTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and what was seen."""


@dataclass
class TopicRecord:
    """A record read back from a topic."""

    partition: int
    offset: int
    key: str | None
    value: Any


@dataclass
class StoredSlot:
    """What Redis holds for one slot: counts, late counts, and the latest verdict if closed."""

    requests: int
    successes: int
    late_requests: int
    late_successes: int
    verdict: dict[str, str] | None

    @property
    def counts(self) -> SlotCounts:
        return SlotCounts(self.requests, self.successes)


CLUSTER_FAILOVER_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,  # CLUSTERDOWN, MASTERDOWN
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)
"""What a read of a deployment on a Redis Cluster may raise while a master fails over: a wait polls on."""

FIXED_DATES_RETENTION_DAYS = 36_500
"""Retention for topics holding records stamped on fixed dates (October and November 2026): a century."""


@dataclass
class Deployment:
    """One isolated sla-stream deployment (settings file, topics, group, key prefix, workers)."""

    root: Path
    bootstrap: str
    redis_client: redis.Redis | RedisCluster
    """A client of the deployment's Redis (a ``redis.cluster.RedisCluster`` when ``cluster``), decoding replies."""
    admin: KafkaAdminClient
    grace_seconds: int = 0
    idle_lag_seconds: int = 10
    dedup_hold_minutes: int = 60
    retention_days: int = 100
    """``kafka.retention_days``: tests producing records stamped on fixed dates pass
    :data:`FIXED_DATES_RETENTION_DAYS`, or the broker deletes them once those dates are this old."""
    extra_toml: str = ""
    redis_url: str | None = None
    """A Redis of the test's own (:class:`RedisServer`) or a node of a Redis Cluster; None: the shared one."""
    cluster: bool = False
    """``[redis] cluster``: ``redis_url`` names a node of a Redis Cluster."""
    shards: int = 1
    """``[redis] shards``: the live state split by app into this many namespaces (:mod:`stream.live.shards`)."""
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[WorkerProcess] = field(default_factory=list)
    produced: dict[str, int] = field(default_factory=dict)
    """Last produced offset per input partition (``topic:partition``)."""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.group = f"sla-test-{self.name}"
        self.prefix = f"sla-test-{self.name}:"
        self.shard_keys = [Keys(prefix) for prefix in shard_prefixes(self.prefix, self.shards, self.cluster)]
        """The store's key names of each shard of this deployment's namespace (one shard: the plain prefix)."""
        self.keys = self.shard_keys[0]
        """The key names of the home shard (the only one when not sharded): the closer's lease, exemptions, ..."""
        self.redis_errors: tuple[type[Exception], ...] = CLUSTER_FAILOVER_ERRORS if self.cluster else ()
        """What a wait tolerates from a read of Redis (a cluster failing over); nothing on a single Redis."""
        names = {
            "requests": f"t-{self.name}-requests",
            "successes": f"t-{self.name}-successes",
            "exemptions": f"t-{self.name}-exemptions",
            "verdicts": f"t-{self.name}-verdicts",
            "dead_letter": f"t-{self.name}-dead-letter",
        }
        topics_toml = "\n".join(f'{key} = "{value}"' for key, value in names.items())
        self.config = self.root / "sla-stream.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [stream]
                group = "{self.group}"
                grace_seconds = {self.grace_seconds}
                idle_lag_seconds = {self.idle_lag_seconds}
                dedup_hold_minutes = {self.dedup_hold_minutes}

                [kafka]
                bootstrap = "{self.bootstrap}"
                partitions = {INPUT_PARTITIONS}
                retention_days = {self.retention_days}

                [kafka.topics]
                """
            )
            + topics_toml
            + f'\n\n[redis]\nkey_prefix = "{self.prefix}"\n'
            + (f'url = "{self.redis_url}"\n' if self.redis_url else "")
            + ("cluster = true\n" if self.cluster else "")
            + (f"shards = {self.shards}\n" if self.shards != 1 else "")
            + "\n"
            + self.extra_toml,
            encoding="utf-8",
        )
        self.settings = load_settings(self.config)
        self.topics = self.settings.topics
        self._producer: KafkaProducer | None = None
        self._worker_count = 0

    # ----- topics

    def topic_of(self, kind: str) -> str:
        return {"request": self.topics.requests, "success": self.topics.successes}.get(kind) or getattr(
            self.topics, kind
        )

    @property
    def input_topics(self) -> tuple[str, str]:
        return self.topics.requests, self.topics.successes

    @property
    def input_tps(self) -> list[str]:
        return [tp_name(t, p) for t in (self.topics.requests, self.topics.successes) for p in range(INPUT_PARTITIONS)]

    def create_topics(self) -> None:
        """``sla-stream topics --config F``: the five topics as the settings plan them."""
        done = subprocess.run([*SLA_STREAM, "topics", "--config", str(self.config)], capture_output=True, text=True)
        assert done.returncode == 0, f"sla-stream topics failed ({done.returncode}):\n{done.stdout}{done.stderr}"

    # ----- workers

    def start_worker(self, *args: str) -> WorkerProcess:
        """A worker of the deployment (``args``: more options of ``sla-stream worker``)."""
        self._worker_count += 1
        name = f"worker-{self._worker_count}"
        worker = WorkerProcess(name, self.config, self.root, self.root / f"{name}.log", self.redis_url, args)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: WorkerProcess, timeout_s: float = 60) -> None:
        """Until the worker has joined its group and started consuming (Faust logs "Worker]: Ready")."""
        self.wait_for(f"{worker.name} to be ready", lambda: "Worker]: Ready" in worker.tail(200), timeout_s)

    def check_workers_alive(self) -> None:
        for worker in self.workers:
            if worker.proc.returncode is None and not worker.alive:
                raise AssertionError(f"{worker.name} exited with {worker.proc.returncode}:\n{worker.tail()}")

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} ({w.log}) =====\n{w.tail()}" for w in self.workers)

    # ----- producing

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                batch_size=512 * 1024,
                max_request_size=8 * 1024 * 1024,
            )
        return self._producer

    def produce(self, records: Iterable[OutRecord]) -> list[tuple[str, int, int]]:
        """Produce and wait until Kafka acknowledged every record: ``(topic, partition, offset)`` of each."""
        futures = [
            self.producer.send(
                self.topic_of(r.kind), key=r.key, value=r.value, partition=r.partition, timestamp_ms=r.timestamp_ms
            )
            for r in records
        ]
        self.producer.flush(timeout=60)
        placed = []
        for future in futures:
            meta = future.get(timeout=60)
            placed.append((meta.topic, meta.partition, meta.offset))
            if meta.topic in (self.topics.requests, self.topics.successes):
                tp = tp_name(meta.topic, meta.partition)
                self.produced[tp] = max(self.produced.get(tp, -1), meta.offset)
        return placed

    def produce_events(
        self, events: Iterable[Event], batch: int = 0, stamped: bool = False
    ) -> list[tuple[str, int, int]]:
        """The events as records (``batch`` > 0: arrays), stamped with their events' time if ``stamped``."""
        if batch or stamped:
            return self.produce(batched_records(events, batch or 1, stamped=stamped))
        return self.produce(single_records(events))

    # ----- the command line

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``sla-stream ARGS --config <this deployment's>``, its output captured (exit status not checked).

        On a Redis of its own (or a cluster), the command gets ``REDIS_URL`` as
        the workers do (an environment's ``REDIS_URL`` would override the
        settings file); ``env`` overrides it.
        """
        own = {"REDIS_URL": self.redis_url} if self.redis_url else {}
        return subprocess.run(
            [*SLA_STREAM, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=None if env is None and not own else {**os.environ, **own, **(env or {})},
        )

    def namespace_snapshot(self, ignoring: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Every key of the live namespace with its type and value: equal snapshots, equal state.

        Keys in ``ignoring`` are skipped before they are read: the closer's lease
        comes and goes every tick, so it may vanish between SCAN and TYPE. Any
        other key that vanishes so is recorded as ``("none", None)``, and shows
        in the comparison as the state change it is.
        """
        r = self.redis_client
        bitmaps = tuple(keys.prefix + "coverage:" for keys in self.shard_keys)  # binary: read as bytes, not decoded

        def string(key: str) -> Any:
            return r.execute_command("GET", key, **{NEVER_DECODE: True}) if key.startswith(bitmaps) else r.get(key)

        readers: dict[str, Callable[[str], Any]] = {
            "string": string,
            "hash": r.hgetall,
            "set": lambda key: sorted(r.smembers(key)),
            "zset": lambda key: r.zrange(key, 0, -1, withscores=True),
            "list": lambda key: r.lrange(key, 0, -1),
            "none": lambda key: None,
        }
        snapshot = {}
        for key in r.scan_iter(match=self.prefix + "*", count=1000):  # test prefixes hold no glob characters
            if key in ignoring:
                continue
            kind = r.type(key)
            snapshot[key] = (kind, readers[kind](key))
        return snapshot

    def flush_stream_time(self, ts: int) -> list[str]:
        """Move every input partition's stream time to ``ts`` with one event of app ``FLUSH_APP`` each.

        Returns the open-slot members these events leave (their slot stays open).
        """
        events = self.flush_events(ts)
        self.produce(OutRecord(e.kind, i // 2, b"flush", event_value(e)) for i, e in enumerate(events))
        return [f"{FLUSH_APP}:{slot_start_ms(ts, self.settings.policy.timezone)}"]

    def flush_events(self, ts: int) -> list[Event]:
        """The events :meth:`flush_stream_time` sends at ``ts``: a request and its success per input partition."""
        events: list[Event] = []
        for p in range(INPUT_PARTITIONS):
            serial = f"{self.name}-{p}-{ts}"
            request = RequestEvent(f"r-flush-{serial}", FLUSH_APP, "0", "flush", ts)
            events += [request, SuccessEvent(f"s-flush-{serial}", request.event_id, FLUSH_APP, "0", "flush", ts, ts)]
        return events

    # ----- waiting

    def wait_for(
        self,
        what: str,
        condition: Callable[[], bool],
        timeout_s: float,
        seen: Callable[[], object] | None = None,
        workers_may_exit: bool = False,
    ) -> None:
        """Poll ``condition`` every 0.2 s until it holds; fail after ``timeout_s`` with the workers' logs.

        Fails at once when a worker exited on its own, unless ``workers_may_exit``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not workers_may_exit:
                self.check_workers_alive()
            try:
                if condition():
                    return
            except self.redis_errors as error:  # a cluster failing over: not yet
                if time.monotonic() > deadline:
                    raise HarnessTimeout(
                        f"timed out after {timeout_s:.0f}s waiting for {what}; Redis: {error!r}\n{self.logs()}"
                    ) from error
                time.sleep(0.2)
                continue
            if time.monotonic() > deadline:
                detail = f"; seen: {seen()}" if seen else ""
                raise HarnessTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}\n{self.logs()}")
            time.sleep(0.2)

    # ----- reading the shards

    def keys_of(self, app_id: str) -> Keys:
        """The key names of the shard holding ``app_id``'s slots, verdicts and months."""
        return self.shard_keys[shard_of(app_id, len(self.shard_keys))]

    def shard_offsets(self) -> dict[str, tuple[int, ...]]:
        """Each input partition's applied offset in every shard (-1: none there); partitions no shard has are absent."""
        raw = [self.redis_client.hgetall(keys.offsets) for keys in self.shard_keys]
        return {tp: tuple(int(r.get(tp, -1)) for r in raw) for tp in set().union(*raw)}

    def generations(self) -> list[int | None]:
        """Each shard's generation (its ``meta`` marker; None: it has none)."""
        found = [self.redis_client.hget(keys.meta, "generation") for keys in self.shard_keys]
        return [None if g is None else int(g) for g in found]

    def applied_offsets(self) -> dict[str, int]:
        """Each input partition's applied offset: the least of the shards' (where a worker continues from)."""
        return {tp: min(offsets) for tp, offsets in self.shard_offsets().items()}

    def all_applied(self, expected: Mapping[str, int] | None = None) -> bool:
        applied = self.applied_offsets()
        return all(applied.get(tp) == offset for tp, offset in (expected or self.produced).items())

    def wait_applied(self, timeout_s: float = 120, expected: Mapping[str, int] | None = None) -> None:
        """Until Redis records, for every input partition produced to, the last produced offset as applied."""
        target = dict(expected or self.produced)
        self.wait_for(
            f"offsets {target} applied",
            lambda: self.all_applied(target),
            timeout_s,
            lambda: self.applied_offsets(),
        )

    def watermark(self) -> int | None:
        """The job's watermark by event time alone: the least stream time of all input partitions."""
        times = self.stream_times()
        return min(times[tp] for tp in self.input_tps) if all(tp in times for tp in self.input_tps) else None

    def due_open_slots(self) -> list[str]:
        """Open slots whose end plus grace the event-time watermark has passed (the closer owes them)."""
        watermark = self.watermark()
        if watermark is None:
            return []
        before = ClockTiming.of(self.settings).due_before(watermark)
        return [
            member
            for keys in self.shard_keys
            for member in self.redis_client.zrangebyscore(keys.open, "-inf", f"({before}")
        ]

    def wait_closed_to_watermark(self, timeout_s: float = 60) -> None:
        """Until the closer has closed every slot the event-time watermark allows, and published all."""
        self.wait_for(
            "the slots due by event time to be closed",
            lambda: not self.due_open_slots() and self.closer_done(),
            timeout_s,
            lambda: {"watermark": self.watermark(), "due": self.due_open_slots()[:10]},
        )

    def open_slots(self) -> list[str]:
        return [member for keys in self.shard_keys for member in self.redis_client.zrange(keys.open, 0, -1)]

    def outbox_length(self) -> int:
        """Verdict messages (key and value: two entries each) waiting in every shard's outbox."""
        return sum(self.redis_client.llen(keys.outbox) for keys in self.shard_keys)

    def dirty_count(self) -> int:
        """Closed slots waiting, in every shard, to be judged again."""
        return sum(self.redis_client.scard(keys.dirty) for keys in self.shard_keys)

    def settled(self, still_open: Sequence[str] = ()) -> bool:
        return sorted(self.open_slots()) == sorted(still_open) and self.closer_done()

    def closer_done(self) -> bool:
        """Nothing left for the closer: no slot to judge again, no verdict to publish, and no tick under way.

        The lease is held for a whole tick, which refreshes the month ledgers
        after publishing; its absence after an empty outbox means the ledgers
        are up to date too.
        """
        return (
            self.outbox_length() == 0
            and self.dirty_count() == 0
            and not self.redis_client.exists(self.keys.closer_lease)
        )

    def wait_settled(self, timeout_s: float = 120, still_open: Sequence[str] = ()) -> None:
        """Until every produced offset is applied, every slot closed (but ``still_open``), nothing queued."""
        self.wait_applied(timeout_s)
        self.wait_for(
            "all slots closed and the outbox empty",
            lambda: self.settled(still_open),
            timeout_s,
            lambda: {
                "open": self.open_slots()[:10],
                "outbox": self.outbox_length(),
                "dirty": self.dirty_count(),
                "closing": self.redis_client.exists(self.keys.closer_lease),
            },
        )

    # ----- reading state

    def _keys(self, kind: str) -> list[tuple[str, int]]:
        """``(app, slot_ms)`` of every per-slot key of ``kind`` (``slot``, ``verdict``)."""
        return [
            keys.slot_of(key, kind)
            for keys in self.shard_keys
            for key in self.redis_client.scan_iter(match=keys.pattern(kind), count=1000)
        ]

    def slots(self) -> dict[tuple[str, int], StoredSlot]:
        """Every slot Redis counted, with its latest verdict (``None`` while open)."""
        keys = sorted(self._keys("slot"))
        pipe = self.redis_client.pipeline(transaction=False)
        for app, slot in keys:
            pipe.hgetall(self.keys_of(app).slot(app, slot))
            pipe.hgetall(self.keys_of(app).verdict(app, slot))
        raw = pipe.execute()
        result = {}
        for i, key in enumerate(keys):
            counts, verdict = raw[2 * i], raw[2 * i + 1]
            result[key] = StoredSlot(
                int(counts.get("requests", 0)),
                int(counts.get("successes", 0)),
                int(counts.get("late_requests", 0)),
                int(counts.get("late_successes", 0)),
                verdict or None,
            )
        return result

    def verdict_table(self, ignore_apps: Sequence[str] = (FLUSH_APP,)) -> dict[tuple[str, int], dict[str, str]]:
        """Every closed slot's latest verdict as Redis holds it, with the slot's late counts."""
        return {
            key: {**slot.verdict, "late_requests": str(slot.late_requests), "late_successes": str(slot.late_successes)}
            for key, slot in self.slots().items()
            if slot.verdict is not None and key[0] not in ignore_apps
        }

    def verdict_keys(self) -> set[tuple[str, int]]:
        return set(self._keys("verdict"))

    def month(self, app_id: str, first_day: str) -> dict[str, Any] | None:
        raw = self.redis_client.get(self.keys_of(app_id).month(app_id, date.fromisoformat(first_day)))
        return None if raw is None else json.loads(raw)

    def stream_times(self) -> dict[str, int]:
        """Each input partition's stream time: the least of the shards' (absent while a shard has none)."""
        raw = [self.redis_client.hgetall(keys.streamtime) for keys in self.shard_keys]
        return {tp: min(int(r[tp]) for r in raw) for tp in set(raw[0]).intersection(*raw[1:])}

    def read_topic(self, kind: str, timeout_s: float = 30) -> list[TopicRecord]:
        """Every record now on the topic, values decoded as JSON (``None`` for a tombstone)."""
        topic = self.topic_of(kind)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            records: list[TopicRecord] = []
            deadline = time.monotonic() + timeout_s
            while any(consumer.position(tp) < ends[tp] for tp in partitions):
                if time.monotonic() > deadline:
                    raise HarnessTimeout(f"could not read {topic} to its end within {timeout_s}s")
                for tp, messages in consumer.poll(timeout_ms=500).items():
                    for m in messages:
                        value = None if m.value is None else json.loads(m.value)
                        key = None if m.key is None else m.key.decode()
                        records.append(TopicRecord(tp.partition, m.offset, key, value))
            return records
        finally:
            consumer.close()

    def latest_verdicts(self) -> dict[str, dict[str, Any]]:
        """The verdicts topic reduced to the latest record per key: the highest revision of the highest generation.

        Checks that a (generation, revision) repeats identically, and that the
        latest generation's revisions run without a gap (from 1 after a
        rebuild; from where Redis's revision stood when Redis lost writes).
        """
        by_key: dict[str, dict[tuple[int, int], dict[str, Any]]] = defaultdict(dict)
        for record in self.read_topic("verdicts"):
            assert record.key is not None, record
            version = (record.value["generation"], record.value["revision"])
            earlier = by_key[record.key].get(version)
            assert earlier is None or earlier == record.value, (
                f"{record.key} {version} published twice with different content: {earlier} / {record.value}"
            )
            by_key[record.key][version] = record.value
        for key, versions in by_key.items():
            latest = max(versions)
            revisions = sorted(revision for generation, revision in versions if generation == latest[0])
            assert revisions == list(range(revisions[0], latest[1] + 1)), f"{key}: revisions {revisions} of {latest[0]}"
        return {key: versions[max(versions)] for key, versions in by_key.items()}

    # ----- teardown

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._producer is not None:
            self._producer.close(timeout=10)
        names = [getattr(self.topics, t) for t in ("requests", "successes", "exemptions", "verdicts", "dead_letter")]
        existing = set(self.admin.list_topics())
        names += [t for t in existing if t.startswith(self.group)]  # Faust's own (leader election) topics
        try:
            self.admin.delete_topics([t for t in names if t in existing], timeout_ms=15_000)
        except KafkaError as error:
            print(f"could not delete topics of {self.name}: {error}")
        try:
            self.admin.delete_groups([self.group])
        except KafkaError as error:
            print(f"could not delete group {self.group}: {error}")
        with contextlib.suppress(redis.ConnectionError, *self.redis_errors):  # a test's own Redis may be down by now
            # The live namespace, and any replay namespace a killed or timed-out `sla-stream replay` left behind.
            for pattern in (self.prefix + "*", self.prefix.rstrip(":") + "-replay-*"):
                keys = list(self.redis_client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 1000):
                    self.redis_client.delete(*keys[i : i + 1000])


class EarlyCloseWatch:
    """Samples a deployment while it runs: no slot may have a verdict before event time allows it.

    Each sample reads the verdicts first and the partitions' stream times
    second (the watermark only grows), so a verdict whose slot end plus grace
    lies past the watermark read just after it was certainly closed early.
    Use as a context manager; on exit it fails with the first violations.
    """

    def __init__(self, deployment: Deployment, ignore_apps: Sequence[str] = (FLUSH_APP,)) -> None:
        self.d = deployment
        self.ignore_apps = set(ignore_apps)
        self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="early-close-watch", daemon=True)

    def _run(self) -> None:
        d = self.d
        while not self._stop.is_set():
            closed = {key for key in d.verdict_keys() if key[0] not in self.ignore_apps}
            times = d.stream_times()
            known = [times[tp] for tp in d.input_tps if tp in times]
            watermark = min(known) if len(known) == len(d.input_tps) else None
            for app, slot in closed:
                if watermark is None or not is_due(slot, watermark, d.settings.grace_ms):
                    self.violations.append(f"{app}:{slot} closed with watermark {watermark}")
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> EarlyCloseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self.violations, f"slots closed before event time allowed: {self.violations[:5]}"


# --------------------------------------------------------------------------- comparing


def assert_slots_match_truth(deployment: Deployment, truth: Truth, ignore_apps: Sequence[str] = ()) -> None:
    """Every slot's counts and (closed) verdict in Redis equal the truth, and no slot is missing or extra."""
    settings = deployment.settings
    stored = {key: slot for key, slot in deployment.slots().items() if key[0] not in ignore_apps}
    assert sorted(stored) == sorted(truth.counts), "slots in Redis differ from the slots of the events"
    wrong_counts = {k: (s.counts, truth.counts[k]) for k, s in stored.items() if s.counts != truth.counts[k]}
    assert not wrong_counts, (
        f"{len(wrong_counts)} slots counted wrong (got, expected): {list(wrong_counts.items())[:5]}"
    )
    unavailable = truth.unavailable(settings)
    data_quality = truth.data_quality(settings)
    wrong_verdicts = []
    for key, slot in stored.items():
        v = slot.verdict
        assert v is not None, f"slot {key} has no verdict"
        expected = ("1" if key in unavailable else "0", "1" if key in data_quality else "0")
        if (v["unavailable"], v["data_quality"]) != expected:
            wrong_verdicts.append((key, v, expected))
        if slot.late_requests == slot.late_successes == 0:
            assert (int(v["requests"]), int(v["successes"])) == (slot.requests, slot.successes), (key, v)
    assert not wrong_verdicts, f"{len(wrong_verdicts)} verdicts wrong: {wrong_verdicts[:5]}"


def assert_topic_matches_redis(deployment: Deployment, ignore_apps: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The latest revision of every key on the verdicts topic is the verdict Redis holds."""
    latest = deployment.latest_verdicts()
    stored = {k: s for k, s in deployment.slots().items() if k[0] not in ignore_apps and s.verdict}
    topic_keys = {key for key in latest if key.rpartition(":")[0] not in ignore_apps}
    assert topic_keys == {f"{app}:{slot}" for app, slot in stored}
    for (app, slot), s in stored.items():
        message, v = latest[f"{app}:{slot}"], s.verdict
        assert v is not None
        assert (
            message["revision"],
            message["requests"],
            message["successes"],
            message["unavailable"],
            message["exempt"],
            message["data_quality"],
            message["clause"] or "",
        ) == (
            int(v["revision"]),
            int(v["requests"]),
            int(v["successes"]),
            v["unavailable"] == "1",
            v["exempt"] == "1",
            v["data_quality"] == "1",
            v.get("clause", ""),
        ), (app, slot)
        assert message["app_id"] == app and message["slot_start_ms"] == slot
    return latest


# --------------------------------------------------------------------------- pytest plumbing


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Factory: a started Redis server of the test's own (``aof=False`` for snapshots only); killed afterwards."""
    servers: list[RedisServer] = []

    def make(aof: bool = True) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", free_port(), aof=aof)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def stream_deployment(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_admin: KafkaAdminClient,
    redis_client: redis.Redis,
) -> Iterator[Callable[..., Deployment]]:
    """Factory: ``stream_deployment(grace_seconds=..., ...)`` makes a deployment with its topics created."""
    made: list[Deployment] = []

    cluster_clients: list[RedisCluster] = []

    def make(redis_server: RedisServer | None = None, cluster_url: str | None = None, **options: Any) -> Deployment:
        """A deployment; with ``redis_server``, on that Redis instead of the shared one; with ``cluster_url`` (a
        node of a Redis Cluster), on that cluster, in ``shards=N`` shards (``[redis] cluster = true``)."""
        client: redis.Redis | RedisCluster = redis_client
        if redis_server is not None:
            client = redis_server.client()
            options["redis_url"] = redis_server.url
        if cluster_url is not None:
            client = cluster_client(cluster_url)
            cluster_clients.append(client)
            options |= {"redis_url": cluster_url, "cluster": True}
        deployment = Deployment(tmp_path / f"d{len(made)}", kafka_bootstrap, client, kafka_admin, **options)
        made.append(deployment)
        deployment.create_topics()
        return deployment

    yield make
    report = getattr(request.node, "report_call", None)
    for deployment in made:
        if report is not None and report.failed:
            print(f"\n----- deployment {deployment.name}: worker logs -----\n{deployment.logs()}")
        deployment.close()
    for client in cluster_clients:
        client.close()


def cluster_client(url: str) -> RedisCluster:
    """A sync client of the Redis Cluster a node of which ``url`` names (it discovers the others), decoding replies."""
    return RedisCluster.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10)
