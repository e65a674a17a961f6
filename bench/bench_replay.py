"""Throughput and memory of ``sla-stream replay`` against a raw aiokafka reader of the same topics (`make bench`).

A replay counts a past month again from the input topics (the figures a
dispute is settled on), so what matters is how long a month of traffic takes
and whether memory stays flat as the month grows. About ``--events`` events
(5 million) spanning a whole past calendar month plus a day either side
(Asia/Shanghai) are generated once and written, as each record shape asks
(one event per record, and JSON arrays of ``--array`` events), to fresh sets
of topics, every record stamped with its (latest) event's time so that the
replay's search by timestamp really skips the day before. Then, per shape:

- baseline: a bare aiokafka consumer that reads every record from the
  beginning, decodes its JSON and counts events per (app, slot) in a dict
  (``bench_stream.raw_reader``): the ceiling of reading;
- replay: ``sla-stream replay --month YYYY-MM --format json`` as a process of
  its own, timed wall-clock from start to exit, its resident memory and
  Redis's ``used_memory`` (the replay counts into a namespace of its own)
  sampled every 0.2 s for their peaks. Its exit status must be 0 and its
  figures right: each app's month requests and successes must equal those
  counted from the generated events with the pure core (a wrong replay
  reported as fast would be worthless).

Both run in the same invocation on the same machine, so the ratio between
them is what to compare across machines. With the single shape, a replay of
a third set of topics holding only the first fifth of the events (same month)
shows whether the replay's peak memory is flat as events grow. Needs Kafka
and Redis (`make up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import redis
from bench_stream import PARTITIONS, SHANGHAI, cleanup, raw_reader, rss_mb, write_config
from kafka import KafkaProducer

from stream.arguments import calendar_month_argument
from stream.config import Settings, load_settings
from stream.events import Event, to_record
from stream.kafka_security import kafka_python_options
from stream.sla.counting import counted_time
from stream.sla.months import calendar_month
from stream.sla.slots import day_span_ms
from stream.tools.simulate import TrafficPlan, generate

APPS = 5
SAMPLE_EVERY_S = 0.2
PROGRESS_EVERY = 500_000
REPLAY_TIMEOUT_S = 3600
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DEDUP_HOLD_MS = DAY_MS
"""How long (event time) the expected counts keep an id to drop its duplicates: simulated duplicates arrive
seconds after their original and late successes minutes after their request, so a day is exact."""
SHOW_EVERY_S = 30
"""How often the replay's latest progress line (its stderr) is shown while it runs."""

Send = Callable[[str, bytes, bytes, int], None]
"""Sends one record: topic, key, value and timestamp (ms)."""


@dataclass
class Measure:
    shape: str
    events: int
    """Events in the topics (all the replay reads through or skips by offset search)."""
    month_events: int
    """Of them, events whose counted time falls in the month, duplicates included."""
    records: int
    baseline_s: float
    replay_s: float
    peak_rss_mb: float
    redis_before_mb: float
    redis_peak_mb: float
    summary: str
    """The replay's own summary line (stderr)."""

    @property
    def baseline_rate(self) -> float:
        return self.events / self.baseline_s

    @property
    def replay_rate(self) -> float:
        return self.events / self.replay_s


class MonthCount:
    """Each app's distinct requests and successes in the month, counted from the events with the pure core."""

    def __init__(self, span_ms: tuple[int, int]) -> None:
        self.start_ms, self.end_ms = span_ms
        self.events = 0
        self.month_events = 0
        self.totals: dict[str, Counter[str]] = defaultdict(Counter)
        self._seen: dict[int, set[tuple[str, str, str]]] = defaultdict(set)
        """Ids by the hour of their counted time, released a day (of event time) after it."""
        self.latest_ms = 0
        """The latest event time counted."""

    def add(self, event: Event) -> None:
        self.events += 1
        counted = counted_time(event.ts, event.request_ts if event.kind == "success" else None)
        self.latest_ms = max(self.latest_ms, event.ts)
        if self.events % 10_000 == 0:
            for hour in [h for h in self._seen if (h + 1) * HOUR_MS < self.latest_ms - DEDUP_HOLD_MS]:
                del self._seen[hour]
        if not self.start_ms <= counted < self.end_ms:
            return
        self.month_events += 1
        seen = self._seen[counted // HOUR_MS]
        key = (event.kind, event.app_id, event.event_id)
        if key not in seen:
            seen.add(key)
            self.totals[event.app_id]["requests" if event.kind == "request" else "successes"] += 1

    def expected(self) -> dict[str, tuple[int, int]]:
        return {app: (c["requests"], c["successes"]) for app, c in sorted(self.totals.items())}


@dataclass
class TopicSet:
    """A fresh set of topics being written: the first ``limit`` events, ``per_record`` to a record (1: objects).

    ``count`` counts the same events (sets of the same ``limit`` share one).
    """

    shape: str
    per_record: int
    limit: int
    config: Path
    settings: Settings
    count: MonthCount
    records: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _pending: dict[str, list[tuple[str, int, bytes]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def create(cls, shape: str, per_record: int, limit: int, directory: Path, count: MonthCount) -> TopicSet:
        tag = f"bench-replay-{shape.replace('/', '')}-{uuid.uuid4().hex[:8]}"
        config = write_config(directory, tag, tag)  # creates the topics
        return cls(shape, per_record, limit, config, load_settings(config), count)

    def add(self, send: Send, event: Event, value: bytes) -> None:
        pending = self._pending[event.kind]
        pending.append((event.room_id, event.ts, value))
        if len(pending) >= self.per_record:
            self.flush(send, event.kind)

    def flush(self, send: Send, kind: str) -> None:
        batch = self._pending.pop(kind, [])
        if not batch:
            return
        topic = self.settings.topics.requests if kind == "request" else self.settings.topics.successes
        value = batch[0][2] if self.per_record == 1 else b"[" + b", ".join(v for _, _, v in batch) + b"]"
        stamp = max(ts for _, ts, _ in batch)
        send(topic, batch[0][0].encode(), value, stamp)
        self.records[topic] += 1

    def finish(self, send: Send) -> None:
        for kind in list(self._pending):
            self.flush(send, kind)


def month_plan(year: int, month: int, events: int) -> TrafficPlan:
    """Flat traffic of five apps, the day before the month to the day after it, at about ``events`` events in all."""
    span = calendar_month(year, month)
    start, end = day_span_ms(span.first_day - timedelta(days=1), span.last_day + timedelta(days=1), SHANGHAI)
    end = min(end, int(time.time() * 1000) - HOUR_MS // 2)  # no event in the future, late successes included
    per_peak_minute = sum(1 / (i + 1) for i in range(APPS)) * 2 * 1.002  # a request and a success a call, duplicates
    return TrafficPlan(
        app_ids=tuple(str(1400000001 + i) for i in range(APPS)),
        start_ms=start,
        end_ms=end,
        peak_per_minute=events / (per_peak_minute * (end - start) / 60_000),
        seed=11,
        tz=SHANGHAI,
        trough_share=1.0,
    )


def write_topics(plan: TrafficPlan, count: int, sets: Iterable[TopicSet]) -> int:
    """Generate the plan's first ``count`` events once and write each to every set that takes it; how many."""
    sets = list(sets)
    counts = list({id(s.count): (s.count, s.limit) for s in sets}.values())
    producer = KafkaProducer(
        bootstrap_servers=sets[0].settings.kafka_bootstrap,
        linger_ms=100,
        batch_size=1 << 20,
        **kafka_python_options(sets[0].settings.kafka_security),
    )
    failures: list[BaseException] = []

    def send(topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms).add_errback(failures.append)

    started = time.perf_counter()
    written = 0
    try:
        for written, event in enumerate(_first(generate(plan), count), start=1):
            value = json.dumps(to_record(event)).encode()
            for month_count, limit in counts:
                if written <= limit:
                    month_count.add(event)
            for topic_set in sets:
                if written <= topic_set.limit:
                    topic_set.add(send, event, value)
            if written % PROGRESS_EVERY == 0:
                print(f"  {written:,} events generated and sent ({time.perf_counter() - started:.0f} s)", flush=True)
        for topic_set in sets:
            topic_set.finish(send)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"{len(failures):,} records were not written, e.g. {failures[0]!r}")
    print(f"  {written:,} events generated and sent in {time.perf_counter() - started:.0f} s", flush=True)
    return written


def _first(events: Iterator[Event], count: int) -> Iterator[Event]:
    for n, event in enumerate(events):
        if n >= count:
            return
        yield event


class Sampler:
    """Samples a process's resident memory and Redis's ``used_memory`` every ``every_s`` from a thread; peaks.

    Every :data:`SHOW_EVERY_S` it also prints the last line of ``log`` (the replay's progress).
    """

    def __init__(self, pid: int, store: redis.Redis, log: Path, every_s: float = SAMPLE_EVERY_S) -> None:
        self.pid = pid
        self.store = store
        self.log = log
        self.every_s = every_s
        self.peak_rss_mb = 0.0
        self.peak_redis_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        shown = time.monotonic()
        while True:
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
            self.peak_redis_mb = max(self.peak_redis_mb, redis_used_mb(self.store))
            if time.monotonic() - shown >= SHOW_EVERY_S:
                shown = time.monotonic()
                lines = self.log.read_text().splitlines()
                if lines:
                    print(f"  {lines[-1]}", flush=True)
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def redis_used_mb(store: redis.Redis) -> float:
    return int(store.info("memory")["used_memory"]) / (1 << 20)


class ReplayFailed(Exception):
    """The replay exited with an error, printed something other than its report, or counted wrong."""


def run_replay(topic_set: TopicSet, month: str, directory: Path) -> tuple[float, float, float, float, list, str]:
    """Replay the month from the set's topics: seconds, peak RSS, Redis before and peak (MB), report, summary."""
    label = topic_set.config.stem
    out, log = directory / f"{label}.replay.json", directory / f"{label}.replay.log"
    store = redis.Redis.from_url(topic_set.settings.redis_url)
    try:
        redis_before = redis_used_mb(store)
        command = [sys.executable, "-m", "stream.cli", "replay", "--config", str(topic_set.config)]
        with out.open("w") as stdout, log.open("w") as stderr:
            started = time.perf_counter()
            replay = subprocess.Popen(
                [*command, "--month", month, "--format", "json"], stdout=stdout, stderr=stderr, cwd=directory
            )
        sampler = Sampler(replay.pid, store, log)
        try:
            status = replay.wait(REPLAY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            replay.kill()
            replay.wait()
            raise ReplayFailed(f"replay did not finish within {REPLAY_TIMEOUT_S} s; see {log}") from None
        finally:
            sampler.stop()
        seconds = time.perf_counter() - started
    finally:
        store.close()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    if status != 0:
        raise ReplayFailed(f"replay exited with {status}: {lines[-1] if lines else '(no output)'}; see {log}")
    try:
        report = json.loads(out.read_text())
    except json.JSONDecodeError as error:
        raise ReplayFailed(f"replay printed no JSON report ({error}); see {out}") from None
    summary = next((line for line in reversed(lines) if line.startswith("replayed ")), "(no summary line)")
    return seconds, sampler.peak_rss_mb, redis_before, sampler.peak_redis_mb, report, summary


def check_figures(shape: str, report: list, count: MonthCount) -> None:
    """The replay's month requests and successes per app must equal the pure core's count of the events."""
    replayed: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for month in report:
        requests, successes = replayed[month["app_id"]]
        replayed[month["app_id"]] = (requests + month["requests"], successes + month["successes"])
    expected = count.expected()
    wrong = {
        app: {"replay": replayed.get(app), "expected": expected.get(app)}
        for app in sorted(replayed.keys() | expected.keys())
        if replayed.get(app) != expected.get(app)
    }
    if wrong:
        raise ReplayFailed(f"{shape}: the replay's (requests, successes) differ from the events': {wrong}")


def measure(topic_set: TopicSet, month: str, directory: Path, with_baseline: bool = True) -> Measure:
    print(f"{topic_set.shape}: baseline ...", flush=True)
    baseline_s = asyncio.run(raw_reader(topic_set.settings)) if with_baseline else float("nan")
    print(f"{topic_set.shape}: replay {month} ...", flush=True)
    seconds, peak_rss, redis_before, redis_peak, report, summary = run_replay(topic_set, month, directory)
    check_figures(topic_set.shape, report, topic_set.count)
    print(f"  {summary}", flush=True)
    return Measure(
        topic_set.shape,
        topic_set.count.events,
        topic_set.count.month_events,
        sum(topic_set.records.values()),
        baseline_s,
        seconds,
        peak_rss,
        redis_before,
        redis_peak,
        summary,
    )


def remove(topic_set: TopicSet) -> None:
    """The set's topics and Redis keys, and any namespace a replay that did not finish left behind."""
    cleanup(topic_set.settings, [topic_set.settings.key_prefix.rstrip(":")])
    store = redis.Redis.from_url(topic_set.settings.redis_url)
    try:
        for key in store.scan_iter(topic_set.settings.key_prefix.rstrip(":") + "-replay-*", count=10_000):
            store.delete(key)
    finally:
        store.close()


def previous_month(today: date) -> tuple[int, int]:
    last = today.replace(day=1) - timedelta(days=1)
    return last.year, last.month


def check_month(parser: argparse.ArgumentParser, year: int, month: int) -> None:
    """The month must have ended (an hour ago: no event of it in the future) and the day before it be retained."""
    now_ms = int(time.time() * 1000)
    span = calendar_month(year, month)
    start, end = day_span_ms(span.first_day - timedelta(days=1), span.last_day, SHANGHAI)
    if end > now_ms - HOUR_MS:
        parser.error(f"--month {year}-{month:02d} has not ended (an hour ago); give a past month")
    retention_ms = load_settings().retention_ms
    if start < now_ms - retention_ms:
        parser.error(
            f"--month {year}-{month:02d} begins more than {retention_ms // DAY_MS} days ago (with the day before it): "
            "the topics would not keep its records"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="events to generate (default 5,000,000)")
    parser.add_argument("--array", type=int, default=100, help="events per record in the batched shape (default 100)")
    parser.add_argument(
        "--month", type=calendar_month_argument, metavar="YYYY-MM", help="the month to replay (default: the last one)"
    )
    parser.add_argument(
        "--shapes", default="single,array", help="record shapes, comma-separated: single, array (default both)"
    )
    parser.add_argument("--keep-topics", action="store_true", help="leave the topics and Redis keys (for debugging)")
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not shapes or set(shapes) - {"single", "array"}:
        parser.error(f"--shapes takes single and/or array, got {args.shapes!r}")
    if args.events < 5 or args.array < 1:
        parser.error("--events must be at least 5 and --array at least 1")
    year, month = args.month or previous_month(datetime.now(SHANGHAI).date())
    check_month(parser, year, month)
    name = f"{year}-{month:02d}"
    span_ms = calendar_month(year, month).span_ms(SHANGHAI)

    directory = Path(tempfile.mkdtemp(prefix="sla-bench-replay-"))
    plan = month_plan(year, month, args.events)
    whole, fifth = MonthCount(span_ms), MonthCount(span_ms)
    sets: list[TopicSet] = []
    failed = False
    try:
        if "single" in shapes:
            sets.append(TopicSet.create("single", 1, args.events, directory, whole))
        if "array" in shapes:
            sets.append(TopicSet.create(f"array{args.array}", args.array, args.events, directory, whole))
        if "single" in shapes:
            sets.append(TopicSet.create("single/5", 1, args.events // 5, directory, fifth))
        print(
            f"generating {args.events:,} events from {name}'s day before to its day after "
            f"({plan.peak_per_minute:.2f} requests a minute for the first app, {APPS} apps), "
            f"writing them to {len(sets)} sets of topics ({PARTITIONS} partitions) ...",
            flush=True,
        )
        write_topics(plan, args.events, sets)
        if whole.latest_ms < span_ms[1]:
            print(f"  note: the {args.events:,} events end before {name} does: its last days have no traffic")
        results = [measure(s, name, directory, with_baseline=s.shape != "single/5") for s in sets]
    except ReplayFailed as error:
        failed = True
        sys.exit(f"bench_replay: {error}")
    except BaseException:
        failed = True
        raise
    finally:
        if args.keep_topics:
            print(f"topics and Redis keys kept; configs in {directory}: {', '.join(s.config.name for s in sets)}")
        else:
            for topic_set in sets:
                remove(topic_set)
            if not failed:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                print(f"replay outputs and logs kept in {directory}", file=sys.stderr)

    print(
        f"\nreplay of {name}\n{'shape':<10} {'events':>10} {'in month':>10} {'records':>10} {'baseline ev/s':>14} "
        f"{'replay s':>9} {'replay ev/s':>12} {'ratio':>6} {'peak RSS MB':>11} {'Redis peak MB':>18}"
    )
    for m in results:
        measured = m.baseline_s == m.baseline_s  # NaN: no baseline for this set
        baseline_rate = f"{m.baseline_rate:,.0f}" if measured else "-"
        ratio = f"{m.replay_rate / m.baseline_rate:.2f}" if measured else "-"
        redis_mb = f"{m.redis_peak_mb:.0f} (+{m.redis_peak_mb - m.redis_before_mb:.0f})"
        print(
            f"{m.shape:<10} {m.events:>10,} {m.month_events:>10,} {m.records:>10,} {baseline_rate:>14} "
            f"{m.replay_s:>9.1f} {m.replay_rate:>12,.0f} {ratio:>6} {m.peak_rss_mb:>11.0f} {redis_mb:>18}"
        )
    full = [m for m in results if m.shape != "single/5"]
    print(
        "50,000,000 events at these rates: "
        + ", ".join(f"{m.shape} {50e6 / m.replay_rate:,.0f} s ({50e6 / m.replay_rate / 60:.0f} min)" for m in full)
    )
    small = next((m for m in results if m.shape == "single/5"), None)
    large = next((m for m in results if m.shape == "single"), None)
    if small and large:
        print(
            f"memory as events grow (single): peak RSS {small.peak_rss_mb:.0f} MB replaying {small.events:,} events, "
            f"{large.peak_rss_mb:.0f} MB replaying {large.events:,} "
            f"({large.peak_rss_mb / small.peak_rss_mb:.2f}x for {large.events / small.events:.1f}x the events)"
        )
    out = Path(".run/bench-replay.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            [
                m.__dict__
                | {"month": name, "baseline_rate": m.baseline_rate, "replay_rate": m.replay_rate}
                | ({} if m.baseline_s == m.baseline_s else {"baseline_s": None, "baseline_rate": None})
                for m in results
            ],
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
