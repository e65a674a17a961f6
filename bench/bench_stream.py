"""Throughput and memory of one worker against a raw aiokafka reader of the same topics (`make bench`).

For each record shape (one event per record, and JSON arrays of events) the
same events are written to a fresh set of topics, then read twice:

- baseline: a bare aiokafka consumer that fetches every record, decodes its
  JSON and counts events per (app, slot) in a dict: the ceiling of reading;
- worker: one ``sla-stream`` worker process, timed from its first applied
  batch until Redis holds every partition's last offset (Kafka to committed
  Redis state), its resident memory sampled throughout.

Both run in the same invocation on the same machine, so the ratio between
them is what to compare across machines. Needs Kafka and Redis (`make up`).

Then the cost of metrics: the array shape again, alternately with the
worker's ``/metrics`` off and on with a scrape every second (fifteen times
Prometheus's usual rate; Faust's sensors included), ``--metrics-runs`` runs
each (3), compared as a ratio of the mean rates in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer

from stream.config import Settings, load_settings
from stream.events import to_record
from stream.kafka_security import aiokafka_options, kafka_python_options
from stream.sla.counting import counted_time
from stream.sla.slots import slot_start_ms
from stream.tools.simulate import TrafficPlan, generate
from stream.tools.topics import admin_client, ensure_topics, plan_topics

PARTITIONS = 4
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class Measure:
    shape: str
    events: int
    records: int
    baseline_s: float
    worker_s: float
    peak_rss_mb: float
    rss_by_progress_mb: list[float]
    scrapes: int = 0
    slowest_scrape_ms: float = 0.0

    @property
    def baseline_rate(self) -> float:
        return self.events / self.baseline_s

    @property
    def worker_rate(self) -> float:
        return self.events / self.worker_s


def make_events(count: int) -> list[dict]:
    """About ``count`` realistic events (five apps, busy afternoon traffic, duplicates and late successes)."""
    start = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 48 * 3_600_000
    apps = 5
    per_hour = sum(1500 / (i + 1) for i in range(apps)) * 60 * 2  # a request and a success a call, flat traffic
    hours = 1.2 * count / per_hour  # a margin for Poisson noise; the stream is cut at ``count``
    plan = TrafficPlan(
        app_ids=tuple(str(1400000001 + i) for i in range(apps)),
        start_ms=start,
        end_ms=start + int(hours * 3_600_000),
        peak_per_minute=1500,
        seed=11,
        tz=SHANGHAI,
        trough_share=1.0,
    )
    events = []
    for event in generate(plan):
        events.append({"kind": event.kind, **to_record(event)})
        if len(events) >= count:
            break
    return events


def write_config(directory: Path, tag: str) -> Path:
    path = directory / f"{tag}.toml"
    path.write_text(
        f'[stream]\ngroup = "{tag}"\ngrace_seconds = 0\n'
        f'[redis]\nkey_prefix = "{tag}:"\n'
        f"[kafka]\npartitions = {PARTITIONS}\n"
        "[kafka.topics]\n"
        + "".join(
            f'{name} = "{tag}.{name}"\n' for name in ("requests", "successes", "exemptions", "verdicts", "dead_letter")
        )
    )
    return path


def produce(settings: Settings, events: list[dict], per_record: int, compression: str | None) -> dict[str, int]:
    """Write the events, ``per_record`` to a record (1: plain objects); return the record count per topic."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        linger_ms=20,
        batch_size=1 << 20,
        compression_type=compression,
        **kafka_python_options(settings.kafka_security),
    )
    topic_of = {"request": settings.topics.requests, "success": settings.topics.successes}
    pending: dict[str, list[dict]] = defaultdict(list)
    sent: dict[str, int] = defaultdict(int)

    def flush(kind: str) -> None:
        batch = pending.pop(kind, [])
        if batch:
            value = batch[0] if per_record == 1 else batch
            producer.send(topic_of[kind], key=batch[0]["room_id"].encode(), value=json.dumps(value).encode())
            sent[topic_of[kind]] += 1

    for event in events:
        record = {k: v for k, v in event.items() if k != "kind"}
        pending[event["kind"]].append(record)
        if len(pending[event["kind"]]) >= per_record:
            flush(event["kind"])
    for kind in list(pending):
        flush(kind)
    producer.flush()
    producer.close()
    return dict(sent)


async def baseline(settings: Settings) -> float:
    """Seconds for a bare aiokafka consumer to read, decode and count every event of the input topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **aiokafka_options(settings.kafka_security),
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (settings.topics.requests, settings.topics.successes)
            for p in range(PARTITIONS)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        counts: dict[tuple[str, int], int] = defaultdict(int)
        started = time.perf_counter()
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                for message in messages:
                    decoded = json.loads(message.value)
                    for event in decoded if isinstance(decoded, list) else [decoded]:
                        ts = counted_time(event["ts"], event.get("request_ts"))
                        counts[(event["app_id"], slot_start_ms(ts, SHANGHAI))] += 1
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{proc}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration):
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class Scraper:
    """Scrapes a worker's /metrics every ``every_s`` from a thread, as Prometheus would; counts and times them."""

    def __init__(self, port: int, every_s: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every_s = every_s
        self.count = 0
        self.slowest_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
            except OSError:
                continue  # the worker is not serving yet
            self.count += 1
            self.slowest_ms = max(self.slowest_ms, (time.perf_counter() - started) * 1000)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_worker(
    config: Path, settings: Settings, records: dict[str, int], log: Path, scraped: bool = False
) -> tuple[float, float, list[float], Scraper | None]:
    """Start a worker; seconds from its first applied batch to the last offset, peak RSS, RSS at each quarter.

    ``scraped``: with /metrics on, scraped every second while it works.
    """
    store = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    offsets_key = settings.key_prefix + "offsets"
    total = sum(records.values())
    port = free_port()
    metrics = f"127.0.0.1:{port}" if scraped else "off"
    with log.open("w") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker", "--config", str(config), "--metrics-port", metrics],
            stdout=output,
            stderr=output,
            cwd=config.parent,  # the temp dir: Faust writes its data directory into the working directory
        )
    scraper = Scraper(port) if scraped else None
    try:
        first = None
        peak = 0.0
        quarters: list[float] = []
        deadline = time.time() + 900
        while time.time() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log}")
            offsets = store.hgetall(offsets_key)
            applied = sum(int(v) + 1 for v in offsets.values())
            rss = rss_mb(worker.pid)
            peak = max(peak, rss)
            if applied and first is None:
                first = time.perf_counter()
            while len(quarters) < 4 and applied >= total * (len(quarters) + 1) / 4:
                quarters.append(rss)
            if applied >= total:
                return time.perf_counter() - (first or time.perf_counter()), peak, quarters, scraper
            time.sleep(0.1)
        raise RuntimeError("worker did not finish within 15 minutes")
    finally:
        if scraper is not None:
            scraper.stop()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def cleanup(settings: Settings) -> None:
    admin = admin_client(settings)
    try:
        admin.delete_topics([spec.name for spec in plan_topics(settings)])
    finally:
        admin.close()
    store = redis.Redis.from_url(settings.redis_url)
    for key in store.scan_iter(settings.key_prefix + "*", count=10_000):
        store.delete(key)


def measure(
    shape: str,
    per_record: int,
    events: list[dict],
    directory: Path,
    compression: str | None,
    scraped: bool = False,
    with_baseline: bool = True,
) -> Measure:
    tag = f"bench-{shape}-{uuid.uuid4().hex[:8]}"
    config = write_config(directory, tag)
    settings = load_settings(config)
    admin = admin_client(settings)
    ensure_topics(admin, plan_topics(settings))
    admin.close()
    try:
        records = produce(settings, events, per_record, compression)
        baseline_s = asyncio.run(baseline(settings)) if with_baseline else float("nan")
        worker_s, peak, quarters, scraper = run_worker(config, settings, records, directory / f"{tag}.log", scraped)
        measured = Measure(shape, len(events), sum(records.values()), baseline_s, worker_s, peak, quarters)
        if scraper is not None:
            measured.scrapes, measured.slowest_scrape_ms = scraper.count, scraper.slowest_ms
        return measured
    finally:
        cleanup(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000, help="events per record shape (default 500,000)")
    parser.add_argument("--array", type=int, default=100, help="events per record in the batched shape (default 100)")
    parser.add_argument(
        "--compression", choices=("gzip", "snappy", "lz4", "zstd"), help="the producer's batch codec (default none)"
    )
    parser.add_argument(
        "--metrics-runs",
        type=int,
        default=3,
        help="runs each with /metrics off and scraped, alternately, for the metrics' cost (default 3; 0: none)",
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="sla-bench-"))
    print(f"generating {args.events:,} events ...", flush=True)
    events = make_events(args.events)
    results = [
        measure("single", 1, events, directory, args.compression),
        measure(f"array{args.array}", args.array, events, directory, args.compression),
    ]
    print(
        f"\n{'records':<10} {'events':>9} {'baseline ev/s':>14} {'worker ev/s':>12} {'ratio':>6} "
        f"{'peak RSS MB':>11}  RSS at 25/50/75/100% (MB)"
    )
    for m in results:
        print(
            f"{m.shape:<10} {m.events:>9,} {m.baseline_rate:>14,.0f} {m.worker_rate:>12,.0f} "
            f"{m.worker_rate / m.baseline_rate:>6.2f} {m.peak_rss_mb:>11.0f}  "
            + " / ".join(f"{q:.0f}" for q in m.rss_by_progress_mb)
        )
    if args.metrics_runs:
        results += metrics_study(events, args.array, directory, args.compression, args.metrics_runs)
    out = Path(".run/bench.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            [m.__dict__ | {"baseline_rate": m.baseline_rate, "worker_rate": m.worker_rate} for m in results], indent=2
        )
    )
    shutil.rmtree(directory, ignore_errors=True)


def metrics_study(
    events: list[dict], array: int, directory: Path, compression: str | None, runs_each: int
) -> list[Measure]:
    """The array shape with /metrics off and on (scraped each second), alternately, ``runs_each`` runs each."""
    print(f"\nmetrics cost: array{array}, /metrics off and scraped every second, alternately ...", flush=True)
    runs = []
    for scraped in (False, True) * runs_each:
        shape = f"array{array}-{'scraped' if scraped else 'nometrics'}"
        runs.append(measure(shape, array, events, directory, compression, scraped=scraped, with_baseline=False))
    off = [m.worker_rate for m in runs if not m.scrapes]
    on = [m for m in runs if m.scrapes]
    for m in runs:
        extra = f"  {m.scrapes} scrapes, slowest {m.slowest_scrape_ms:.0f} ms" if m.scrapes else ""
        print(f"{m.shape:<22} {m.worker_rate:>12,.0f} ev/s{extra}")
    mean_off = sum(off) / len(off)
    mean_on = sum(m.worker_rate for m in on) / len(on)
    print(f"scraped / no metrics: {mean_on / mean_off:.3f} (spread of the no-metrics runs: {max(off) / min(off):.3f})")
    return runs


if __name__ == "__main__":
    main()
