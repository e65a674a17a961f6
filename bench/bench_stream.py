"""Throughput and memory of the worker against a raw aiokafka reader and Quix Streams on the same topics (`make bench`).

For each record shape (one event per record, and JSON arrays of events) the
same events are written to a fresh pair of input topics, then counted four
ways, one after the other, in the same invocation:

- **raw**: a bare aiokafka consumer that fetches every record, decodes its
  JSON and counts events per (app, slot) in a dict: the ceiling of reading;
- **worker**: one ``sla-stream`` worker process, Kafka to committed Redis state;
- **2 workers**: two worker processes in one consumer group;
- **quix**: Quix Streams (``bench/quix_peer.py``, in ``.venv-bench``) counting
  the same events in tumbling 5-minute event-time windows per app, as a
  Python user would write it.

A worker run is timed from the moment its consumer group is stable with all
its members and counting has begun (a worker's start, and the rebalance when
a second joins, are left out) until Redis holds every partition's last
offset; its rate counts the records applied in that time. Quix is timed from its first record to its
last event counted. Resident memory is sampled throughout (per process).
Every run's counts are checked against the truth computed here from the
events: the workers' per-slot counts in Redis equal the distinct events,
Quix's per-window counts equal the deliveries (Quix does not remove
duplicates).

Ratios between runs of the same invocation are what to compare across
machines. Needs Kafka and Redis (`make up`) and ``.venv-bench`` (`make
bench-venv`). ``--profile`` samples the single worker with py-spy and prints
where its time goes.

Then the cost of metrics: the array shape again, alternately with the
worker's ``/metrics`` off and on with a scrape every second (fifteen times
Prometheus's usual rate; Faust's sensors included), ``--metrics-runs`` runs
each, compared as a ratio of the mean rates in the same invocation.
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
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from stream.config import Settings, load_settings
from stream.events import to_record
from stream.kafka_security import aiokafka_options, kafka_python_options
from stream.sla.counting import counted_time
from stream.sla.slots import slot_start_ms
from stream.tools.simulate import TrafficPlan, generate
from stream.tools.topics import admin_client, ensure_topics, plan_topics

PARTITIONS = 4
SHANGHAI = ZoneInfo("Asia/Shanghai")
REPO = Path(__file__).resolve().parent.parent
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
PY_SPY = REPO / ".venv-bench" / "bin" / "py-spy"
TIMEOUT_S = 900


@dataclass
class Run:
    """One way of counting one shape's events: how fast, and how much memory."""

    name: str
    events: int
    seconds: float
    peak_rss_mb: float
    rss_by_progress_mb: list[float] = field(default_factory=list)
    scrapes: int = 0
    slowest_scrape_ms: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class Shape:
    """A record shape's runs, by name."""

    name: str
    events: int
    records: int
    runs: dict[str, Run] = field(default_factory=dict)

    def ratio(self, top: str, bottom: str) -> float | None:
        if top not in self.runs or bottom not in self.runs:
            return None
        return self.runs[top].rate / self.runs[bottom].rate


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


def truth(events: list[dict]) -> tuple[Counter[str], Counter[str]]:
    """Per ``kind|app|slot``: the distinct events (what a worker counts) and every delivery (what Quix counts)."""
    distinct: dict[str, set[str]] = defaultdict(set)
    deliveries: Counter[str] = Counter()
    for event in events:
        slot = slot_start_ms(counted_time(event["ts"], event.get("request_ts")), SHANGHAI)
        key = f"{event['kind']}|{event['app_id']}|{slot}"
        distinct[key].add(event["event_id"])
        deliveries[key] += 1
    return Counter({key: len(ids) for key, ids in distinct.items()}), deliveries


def write_config(directory: Path, tag: str, inputs_tag: str) -> Path:
    """Write the settings of one run and create its topics; the path of the settings file.

    The run reads the shape's input topics (``inputs_tag``) with its own
    group, Redis prefix and other topics (``tag``): a run's verdicts must not
    meet another's, since a worker finding verdicts but no state in Redis
    refuses to count (the state looks lost).
    """
    path = directory / f"{tag}.toml"
    path.write_text(
        f'[stream]\ngroup = "{tag}"\ngrace_seconds = 0\n'
        f'[redis]\nkey_prefix = "{tag}:"\n'
        f"[kafka]\npartitions = {PARTITIONS}\n"
        "[kafka.topics]\n"
        + "".join(f'{name} = "{inputs_tag}.{name}"\n' for name in ("requests", "successes"))
        + "".join(f'{name} = "{tag}.{name}"\n' for name in ("exemptions", "verdicts", "dead_letter"))
    )
    admin = admin_client(load_settings(path))
    try:
        ensure_topics(admin, plan_topics(load_settings(path)))
    finally:
        admin.close()
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


async def raw_reader(settings: Settings) -> float:
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


def group_formed(admin: KafkaAdminClient, group: str, members: int) -> bool:
    """The consumer group is stable with ``members`` members (each has its partitions)."""
    try:
        described = admin.describe_groups([group]).get(group) or {}
    except Exception:  # noqa: BLE001 - the group's coordinator is not there yet
        return False
    return described.get("group_state") == "Stable" and len(described.get("members") or []) == members


def run_workers(
    name: str,
    config: Path,
    settings: Settings,
    records: dict[str, int],
    events: int,
    count: int = 1,
    scraped: bool = False,
    profile: Path | None = None,
    load: Callable[[list[int]], Callable[[], None]] | None = None,
) -> Run:
    """Start ``count`` workers in one group; time them from the group formed to Redis holding every last offset.

    ``scraped``: with /metrics on, scraped every second while they work.
    ``profile``: py-spy samples the (single) worker into this file.
    ``load``: started with the workers' web ports once they are started (it waits for them to answer), put on
    them while they work; what it returns stops it.
    """
    store = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    admin = admin_client(settings)
    offsets_key = settings.key_prefix + "offsets"
    total = sum(records.values())
    ports = [free_port() for _ in range(count)]
    workers: list[subprocess.Popen[bytes]] = []
    samplers: list[subprocess.Popen[bytes]] = []
    scrapers = [Scraper(port) for port in ports] if scraped or load else []
    for index, port in enumerate(ports):
        home = config.parent / f"{config.stem}-w{index}"  # Faust writes its data directory into the working one
        home.mkdir()
        with (home / "worker.log").open("w") as output:
            command = [sys.executable, "-m", "stream.cli", "worker", "--config", str(config)]
            command += ["--metrics-port", f"127.0.0.1:{port}" if scraped or load else "off"]
            workers.append(subprocess.Popen(command, stdout=output, stderr=output, cwd=home))
        if profile is not None:
            samplers.append(_py_spy(workers[-1].pid, profile))
    stop_load = load(ports) if load is not None else None
    try:
        formed_at: float | None = None
        applied_then = 0
        peaks = [0.0] * count
        quarters: list[float] = []
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}; see {config.parent}")
            applied = sum(int(v) + 1 for v in store.hgetall(offsets_key).values())
            rss = [rss_mb(worker.pid) for worker in workers]
            peaks = [max(a, b) for a, b in zip(peaks, rss, strict=True)]
            if formed_at is None and applied > 0 and group_formed(admin, settings.group, count):
                formed_at, applied_then = time.perf_counter(), applied
            while len(quarters) < 4 and applied >= total * (len(quarters) + 1) / 4:
                quarters.append(max(rss))
            if applied >= total:
                if formed_at is None or applied_then >= total * 0.9:
                    raise RuntimeError(f"{name}: the group formed after 90% of the records were counted; use more")
                seconds = time.perf_counter() - formed_at
                measured = Run(name, round(events * (total - applied_then) / total), seconds, max(peaks), quarters)
                if scrapers:
                    measured.scrapes = sum(s.count for s in scrapers)
                    measured.slowest_scrape_ms = max(s.slowest_ms for s in scrapers)
                return measured
            time.sleep(0.05)
        raise RuntimeError(f"{name}: not done within {TIMEOUT_S} s")
    finally:
        if stop_load is not None:
            stop_load()
        for scraper in scrapers:
            scraper.stop()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for sampler in samplers:
            sampler.wait(30)
        admin.close()
        store.close()


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (all its threads) into ``out`` as collapsed stacks, until it exits."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    command += ["--format", "raw", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_worker_counts(settings: Settings, expected: Counter[str]) -> None:
    """The slots' counts in Redis equal the distinct events of each kind, app and slot."""
    store = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        found: Counter[str] = Counter()
        for key in store.scan_iter(settings.key_prefix + "slot:*", count=10_000):
            app, slot = key[len(settings.key_prefix) + len("slot:") :].split(":")
            counts = store.hgetall(key)
            for kind, field_name in (("request", "requests"), ("success", "successes")):
                if int(counts.get(field_name, 0)):
                    found[f"{kind}|{app}|{slot}"] = int(counts[field_name])
    finally:
        store.close()
    _same_counts("worker", found, expected)


def _same_counts(who: str, found: Counter[str], expected: Counter[str]) -> None:
    wrong = {key for key in found.keys() | expected.keys() if found[key] != expected[key]}
    if wrong:
        key = sorted(wrong)[0]
        raise RuntimeError(f"{who} counted {len(wrong)} slots wrong, e.g. {key}: {found[key]} for {expected[key]}")


def run_quix(settings: Settings, events: int, directory: Path, expected: Counter[str]) -> Run:
    """Quix Streams counting the shape's topics (bench/quix_peer.py in .venv-bench), checked against ``expected``."""
    group = f"quix-{uuid.uuid4().hex[:8]}"
    command = [str(BENCH_PYTHON), str(REPO / "bench" / "quix_peer.py"), "--bootstrap", settings.kafka_bootstrap]
    command += ["--requests", settings.topics.requests, "--successes", settings.topics.successes]
    command += ["--events", str(events), "--group", group, "--state-dir", str(directory / group)]
    command += ["--timeout-s", str(TIMEOUT_S)]
    with (directory / f"{group}.log").open("w") as log:
        peer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=directory)
        peak, samples = 0.0, []
        reader = threading.Thread(target=lambda: samples.append(peer.stdout.read() if peer.stdout else b""))
        reader.start()
        while peer.poll() is None:
            peak = max(peak, rss_mb(peer.pid))
            time.sleep(0.05)
        reader.join()
    try:
        if peer.returncode != 0:
            raise RuntimeError(f"quix exited with {peer.returncode}; see {directory / group}.log")
        result = json.loads(samples[0])
        _same_counts("quix", Counter(result["counts"]), expected)
        return Run("quix", result["events"], result["seconds"], peak)
    finally:
        _remove_quix_leftovers(settings, group)


def _remove_quix_leftovers(settings: Settings, group: str) -> None:
    """Quix's repartition and changelog topics (their names hold ``__<group>--``) and its consumer group."""
    admin = admin_client(settings)
    try:
        leftovers = [name for name in admin.list_topics() if f"__{group}--" in name]
        if leftovers:
            admin.delete_topics(leftovers)
        admin.delete_groups([group])
    except Exception as error:  # noqa: BLE001 - leftovers are harmless; say so and go on
        print(f"  (quix leftovers of {group} not all removed: {error})", file=sys.stderr)
    finally:
        admin.close()


def cleanup(settings: Settings, tags: list[str]) -> None:
    """Delete the topics and Redis keys of the shape's runs (``tags``: each starts with the shape's own).

    Faust leaves a ``<group>-__assignor-__leader`` topic per group: those go too.
    """
    admin = admin_client(settings)
    try:
        admin.delete_topics([name for name in admin.list_topics() if name.startswith(tags[0])])
    finally:
        admin.close()
    store = redis.Redis.from_url(settings.redis_url)
    for tag in tags:
        for key in store.scan_iter(tag + ":*", count=10_000):
            store.delete(key)


def measure_shape(shape: str, per_record: int, events: list[dict], directory: Path, args: argparse.Namespace) -> Shape:
    """The shape's events in fresh topics, counted by each peer in turn."""
    topics_tag = f"bench-{shape}-{uuid.uuid4().hex[:8]}"
    settings = load_settings(write_config(directory, topics_tag, topics_tag))
    tags = [topics_tag]
    distinct, deliveries = truth(events)
    try:
        print(f"{shape}: producing {len(events):,} events ...", flush=True)
        records = produce(settings, events, per_record, args.compression)
        result = Shape(shape, len(events), sum(records.values()))
        result.runs["raw"] = Run("raw", len(events), asyncio.run(raw_reader(settings)), 0.0)
        for count in (1, 2):
            name = "worker" if count == 1 else f"{count} workers"
            tags.append(f"{topics_tag}-{count}w")
            result.runs[name] = count_with_workers(name, tags[-1], topics_tag, directory, records, len(events), count)
            check_worker_counts(load_settings(directory / f"{topics_tag}-{count}w.toml"), distinct)
            print(f"  {name}: {result.runs[name].rate:,.0f} events/s, counts exact", flush=True)
        if args.profile:  # a run of its own: sampling slows the worker a little
            profile = directory / f"profile-{shape}.txt"
            tags.append(f"{topics_tag}-prof")
            run = count_with_workers("profiled", tags[-1], topics_tag, directory, records, len(events), 1, profile)
            print(f"  worker under py-spy: {run.rate:,.0f} events/s (stacks in .run/{profile.name})", flush=True)
            print_profile(Path(shutil.copy(profile, REPO / ".run" / profile.name)))
        if not args.no_quix:
            result.runs["quix"] = run_quix(settings, len(events), directory, deliveries)
            print(f"  quix: {result.runs['quix'].rate:,.0f} events/s, counts exact", flush=True)
        return result
    finally:
        cleanup(settings, tags)


def count_with_workers(
    name: str,
    tag: str,
    inputs_tag: str,
    directory: Path,
    records: dict[str, int],
    events: int,
    count: int,
    profile: Path | None = None,
) -> Run:
    """One run of ``count`` workers over the shape's topics, with its own group, Redis prefix and other topics."""
    config = write_config(directory, tag, inputs_tag)
    return run_workers(name, config, load_settings(config), records, events, count, profile=profile)


PROFILE_AREAS = (
    ("aiokafka/", "aiokafka: fetching and decoding records"),
    ("stream/", "sla-stream: parsing, placing, the ingest step"),
    ("redis/", "redis-py and hiredis"),
    ("asyncio/", "asyncio: sockets and the event loop"),
    ("selectors.py", "asyncio: sockets and the event loop"),
    ("mode/", "Faust and mode"),
    ("faust/", "Faust and mode"),
)


def print_profile(path: Path, top: int = 12) -> None:
    """Where the worker spent its samples (every thread): by area, then the functions with the most own time."""
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        count = int(samples)
        total += count
        frame = stack.split(";")[-1]
        function, _, where = frame.partition(" (")
        source = where.rpartition(":")[0]
        own[f"{function} ({source})" if source else "(native code, no Python frame)"] += count
        area = next((area for marker, area in PROFILE_AREAS if marker in source), None)
        areas[area or "other: imports, native code, threads' bookkeeping"] += count
    print(f"  profile ({total:,} samples, all threads): own time by area, then by function")
    for area, count in areas.most_common():
        print(f"    {100 * count / total:5.1f}%  {area}")
    for function, count in own.most_common(top):
        print(f"    {100 * count / total:5.1f}%    {function}")


def print_table(shapes: list[Shape]) -> None:
    print(
        f"\n{'records':<10} {'run':<10} {'events':>10} {'events/s':>10} {'peak RSS MB':>11}  RSS at 25/50/75/100% (MB)"
    )
    for shape in shapes:
        for run in shape.runs.values():
            quarters = " / ".join(f"{q:.0f}" for q in run.rss_by_progress_mb)
            rss = f"{run.peak_rss_mb:>11.0f}" if run.peak_rss_mb else f"{'-':>11}"
            print(f"{shape.name:<10} {run.name:<10} {run.events:>10,} {run.rate:>10,.0f} {rss}  {quarters}")
    print(f"\n{'records':<10} {'worker/raw':>10} {'worker/quix':>11} {'2 workers/1':>11}")
    for shape in shapes:
        cells = [shape.ratio("worker", "raw"), shape.ratio("worker", "quix"), shape.ratio("2 workers", "worker")]
        text = ["-" if cell is None else f"{cell:.2f}" for cell in cells]
        print(f"{shape.name:<10} {text[0]:>10} {text[1]:>11} {text[2]:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="events per record shape (default 2,000,000)")
    parser.add_argument("--array", type=int, default=100, help="events per record in the batched shape (default 100)")
    parser.add_argument(
        "--compression", choices=("gzip", "snappy", "lz4", "zstd"), help="the producer's batch codec (default none)"
    )
    parser.add_argument("--no-quix", action="store_true", help="leave Quix Streams out")
    parser.add_argument("--profile", action="store_true", help="sample the single worker with py-spy")
    parser.add_argument(
        "--metrics-runs",
        type=int,
        default=3,
        help="runs each with /metrics off and scraped, alternately, for the metrics' cost (default 3; 0: none)",
    )
    args = parser.parse_args()
    if not args.no_quix and not BENCH_PYTHON.exists():
        sys.exit(f"bench: {BENCH_PYTHON} not found; run `make bench-venv` (or pass --no-quix)")
    directory = Path(tempfile.mkdtemp(prefix="sla-bench-"))
    (REPO / ".run").mkdir(exist_ok=True)
    print(f"generating {args.events:,} events ...", flush=True)
    events = make_events(args.events)
    shapes = [
        measure_shape("single", 1, events, directory, args),
        measure_shape(f"array{args.array}", args.array, events, directory, args),
    ]
    print_table(shapes)
    study = (
        metrics_study(events, args.array, directory, args.compression, args.metrics_runs) if args.metrics_runs else []
    )
    out = REPO / ".run" / "bench.json"
    out.write_text(
        json.dumps(
            {
                "shapes": [
                    {"shape": s.name, "events": s.events, "records": s.records}
                    | {"runs": {name: run.__dict__ | {"rate": run.rate} for name, run in s.runs.items()}}
                    for s in shapes
                ],
                "metrics_study": [run.__dict__ | {"rate": run.rate} for run in study],
            },
            indent=2,
        )
    )
    shutil.rmtree(directory, ignore_errors=True)


def metrics_study(
    events: list[dict], array: int, directory: Path, compression: str | None, runs_each: int
) -> list[Run]:
    """The array shape with /metrics off and on (scraped each second), alternately, ``runs_each`` runs each."""
    print(f"\nmetrics cost: array{array}, /metrics off and scraped every second, alternately ...", flush=True)
    topics_tag = f"bench-metrics-{uuid.uuid4().hex[:8]}"
    settings = load_settings(write_config(directory, topics_tag, topics_tag))
    runs: list[Run] = []
    tags = [topics_tag]
    try:
        records = produce(settings, events, array, compression)
        for index, scraped in enumerate((False, True) * runs_each):
            tag = f"{topics_tag}-{index}"
            tags.append(tag)
            config = write_config(directory, tag, topics_tag)
            name = "scraped" if scraped else "no metrics"
            runs.append(run_workers(name, config, load_settings(config), records, len(events), scraped=scraped))
    finally:
        cleanup(settings, tags)
    off = [run.rate for run in runs if not run.scrapes]
    on = [run for run in runs if run.scrapes]
    for run in runs:
        extra = f"  {run.scrapes} scrapes, slowest {run.slowest_scrape_ms:.0f} ms" if run.scrapes else ""
        print(f"{run.name:<12} {run.rate:>12,.0f} ev/s{extra}")
    mean_off = sum(off) / len(off)
    mean_on = sum(run.rate for run in on) / len(on)
    print(f"scraped / no metrics: {mean_on / mean_off:.3f} (spread of the no-metrics runs: {max(off) / min(off):.3f})")
    return runs


if __name__ == "__main__":
    main()
