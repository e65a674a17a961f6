"""Issue 19, item 4: ``sla-stream replay`` and ``sla-stream rebuild`` of a month of a fleet of apps, timed and checked.

Run by `make bench-monthend` (MONTHEND_ARGS).

The month-end work reads a whole month back from Kafka: ``replay`` to settle
a dispute (its own namespace, the month's statements), ``rebuild`` after
Redis lost the live state (the live namespace, verdicts published again, the
month ledgers recomputed). At fleet size (the issue: 10,000 apps, sparse
traffic, some 50 million events, both record shapes) each must finish in
under 30 minutes in bounded memory, with the figures the live state holds.

**The plan.** A whole past calendar month on the SLA's clock (by default the
one before this, as ``bench_replay``), ``--apps`` apps (10,000), about
``--events`` events (50,000,000) in all. In each of the month's 5-minute slots
a pseudo-random subset of the apps is active (the same ``--seed``, the same
subsets), so each app has traffic in some of the slots and none in the others;
an active slot has ``--requests-per-slot`` requests (10: 50M events are some 2.5M
active slots, 3% of the apps' slots), each followed by its
success 200 ms later (``bench_scale.Plan.slot_events``), except that some slots
miss successes (unavailable; each app fails at one of a few rates, so some
months meet the SLA and others breach it at every tier) and some have one
success too many (data quality). A quarter of the apps have a fee on record for
the month, so their vouchers are amounts. The **truth** (each app's requests,
successes, unavailable and data-quality slots, exact availability, whether it
meets the SLA, the voucher percent and amount) is computed from the plan's
per-slot counts with the pure core (``judge_slot``, ``availability``,
``meets_target``, ``compensation_percent``, ``voucher``), never from the events
produced or from Redis.

**Per record shape** (``--shapes``: ``array``, a JSON array per app, slot and
kind, as bench_scale; ``single``, one event per record), the plan's events go
to topics of their own (4 partitions, records keyed by app, librdkafka's
producer; generated slot by slot, never held whole), each record stamped with
its latest event's time (the replay finds the month's first record by
timestamp), then one request and success per partition well past the month's
end (app ``flush``: the rebuild's stream time passes every slot of the month,
as the live workers' would). Then:

1. ``sla-stream replay --month M --format json``, a process of its own: timed
   from start to exit; peak resident memory of it and its child processes
   (the counting processes, ``--processes``), and Redis's ``used_memory``,
   sampled every 0.25 s; where its time goes, from Redis sampled as often: the
   count ends when its namespace's applied offsets reach the end, the close
   when no slot is open and no ledger is due, the statements when the
   namespace's removal begins (Redis's key count falls). Checked: every app's
   figures against the truth, and the slots it closed.
2. ``sla-stream rebuild`` into the live namespace (empty: a first rebuild,
   no ``--force``), timed and sampled the same way (its count, then its close:
   verdicts published, month ledgers saved). Checked: the month ledger the
   closer saved for every app against the truth and against the replay's
   statement (every figure but the statement's own ``digest``, ``running``,
   ``as_of`` and ``coverage``, as the cluster tests compare them).

Prints a table (events, records, seconds, events/s, slots closed, peak RSS,
Redis peak, and the phases) and a verdict per check, with what 50,000,000
events would take at the measured rates; writes every figure to
``.run/bench-monthend/<time>-<apps>apps.json`` (and ``latest.json``). Exits 1
when a figure differs from the truth (or the live state from the replay), 2
when a command failed. Each shape's topics and Redis keys (the live namespace
and any replay's) are deleted afterwards (``--keep`` keeps them).

Redis (``--redis``): ``single``, the settings' Redis in one shard (or
``--shards``); ``cluster``, deploy/redis-cluster.sh's Redis Cluster (started
when none answers), ``[redis] cluster = true`` and 6 shards, as the cluster
tests (``bench_scale.redis_target``). ``--profile``: py-spy samples each
command (its counting processes too) and the summary shows where its CPU went.

Needs Kafka and Redis (`make up`). The month's events must lie within the
topics' retention (the month before this one always does).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from bench_replay import Sampler, check_month, previous_month
from bench_scale import (
    PARTITIONS,
    PY_SPY,
    REPO,
    STREAM_DIR,
    Deployment,
    Plan,
    RedisTarget,
    Sender,
    delete_topics,
    end_offsets,
    flush_stream_time,
    fmt,
    git,
    glob_escape,
    parse_shards,
    partition_of,
    print_busy_profile,
    redis_target,
    weigh,
    write_config,
)
from bench_stream import print_profile, rss_mb

from stream.arguments import calendar_month_argument
from stream.config import Settings, load_settings
from stream.live.shards import shard_of, shard_prefixes
from stream.live.store import Keys
from stream.sla.availability import availability, meets_target
from stream.sla.compensation import compensation_percent, voucher
from stream.sla.months import calendar_month
from stream.sla.policy import SlaPolicy
from stream.sla.slots import SLOT_MS
from stream.sla.verdict import SlotCounts, SlotVerdict, judge_slot

OUT_DIR = REPO / ".run" / "bench-monthend"
FAILURE_RATES = (0.0, 0.0, 0.002, 0.01, 0.03, 0.1, 0.25)
"""Share of its active slots that miss successes, by app (``app % 7``): months that meet the SLA, months on the
edge of the 8-slot budget, and months in each voucher tier."""
DATA_QUALITY_RATE = 0.003
"""Share of active slots with one success too many."""
FEE_EVERY = 4
"""Every 4th app has a fee on record for the month (the others' vouchers are a percent without an amount)."""
STATEMENT_ONLY = frozenset({"digest", "running", "as_of", "coverage"})
"""What a statement's JSON has beyond the month ledger's figures (as tests/integration compare them)."""
QUEUE_LIMIT = 200_000
"""Records librdkafka may hold unsent before the generator waits: the producer's memory stays bounded."""
MARKERS = 256
"""Slot keys of a replay's namespace watched to see its removal begin."""
WEIGH_SAMPLE = 2_000
"""Keys of each kind weighed with MEMORY USAGE (the others counted)."""
POLL_S = 0.25
SHOW_EVERY_S = 30.0
"""How often the running command's latest progress line is shown."""
PROGRESS_EVERY = 1_000_000
TARGET_S = 1_800.0
"""Issue 19: a 10,000-app month replays (and rebuilds) in under 30 minutes."""
FULL_SIZE = 50_000_000
EVENT_TIME = re.compile(r'"ts":(\d+)')
COUNT = re.compile(r"([\d,]+) (slots closed|refused|dead letters)")
MASK = (1 << 64) - 1


# --------------------------------------------------------------------------- the plan and its truth


def unit(a: int, s: int, salt: int) -> float:
    """A pseudo-random number in [0, 1) of app ``a``, slot ``s`` and ``salt`` (splitmix64's finaliser)."""
    x = (((salt * 1_048_576 + a) << 16) + s + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return (x ^ (x >> 31)) / 2**64


@dataclass(frozen=True)
class MonthPlan(Plan):
    """A sparse month: in each slot of it, a pseudo-random subset of the apps has ``requests`` requests.

    ``slots`` are the month's (``start_ms`` its first); ``flush_ms`` lies past
    its end plus grace, so the flush moves every partition's stream time past
    every slot of it. An app's slot misses successes at the app's failure rate
    (:data:`FAILURE_RATES`) or has one too many (:data:`DATA_QUALITY_RATE`).
    """

    year: int
    month: int
    active_per_slot: float
    """Apps active in a slot, on average."""
    seed: int

    @classmethod
    def of_month(
        cls, year: int, month: int, apps: int, events: int, requests: int, settings: Settings, seed: int
    ) -> MonthPlan:
        start_ms, end_ms = calendar_month(year, month).span_ms(settings.policy.timezone)
        slots = (end_ms - start_ms) // SLOT_MS
        after = end_ms + settings.grace_ms + SLOT_MS
        return cls(
            apps=apps,
            slots=slots,
            requests=requests,
            start_ms=start_ms,
            grace_s=settings.grace_ms // 1000,
            flush_ms=after,
            release_ms=after,
            idle_lag_s=settings.idle_lag_ms // 1000,
            dedup_hold_min=settings.dedup_hold_ms // 60_000,
            year=year,
            month=month,
            active_per_slot=events / (2 * requests) / slots,
            seed=seed,
        )

    def active(self, s: int) -> list[int]:
        """The apps with traffic in slot ``s``, in order."""
        rng = random.Random(self.seed * 1_000_003 + s)
        whole = int(self.active_per_slot)
        return sorted(rng.sample(range(self.apps), whole + (rng.random() < self.active_per_slot - whole)))

    def active_slots(self) -> Iterator[tuple[int, int]]:
        """Every (slot, app) with traffic, slot by slot (event time order)."""
        for s in range(self.slots):
            for a in self.active(s):
                yield s, a

    def successes(self, a: int, s: int) -> int:
        """Each request's success; or fewer (unavailable), at the app's failure rate; or one too many."""
        draw = unit(a, s, self.seed)
        if draw < FAILURE_RATES[a % len(FAILURE_RATES)]:
            return int(unit(a, s, self.seed + 1) * self.requests)
        if draw >= 1 - DATA_QUALITY_RATE:
            return self.requests + 1
        return self.requests

    def fee(self, a: int) -> Decimal | None:
        """The month's fee of app ``a`` on record (every :data:`FEE_EVERY`-th app), else None."""
        return Decimal(f"{100 + a % 900}.{a % 100:02d}") if a % FEE_EVERY == 0 else None

    @property
    def name(self) -> str:
        return f"{self.year}-{self.month:02d}"


@dataclass
class Truth:
    """What every app's month must say, from the plan's per-slot counts and the pure core; and the plan's totals."""

    figures: dict[str, dict[str, Any]]
    """By app (those with traffic or a fee on record: the apps a replay lists), the figures of :func:`figures_of`."""
    events: int
    active_slots: int
    unavailable_slots: int
    data_quality_slots: int

    def tiers(self) -> Counter[int]:
        """Months by voucher percent (0: the SLA met)."""
        return Counter(f["compensation_percent"] for f in self.figures.values())


def compute_truth(plan: MonthPlan, policy: SlaPolicy) -> Truth:
    """Each app's month from the plan's slots: counts summed, slots judged by ``judge_slot``, the month assessed."""
    judged: Callable[[SlotCounts], SlotVerdict] = cache(lambda counts: judge_slot(counts, policy))
    rows = [[0, 0, 0, 0, 0] for _ in range(plan.apps)]  # requests, successes, slots, unavailable, data quality
    for s, a in plan.active_slots():
        counts = plan.expected(a, s)
        verdict = judged(counts)
        row = rows[a]
        row[0] += counts.requests
        row[1] += counts.successes
        row[2] += 1
        row[3] += verdict.unavailable
        row[4] += verdict.data_quality_issue
    month = calendar_month(plan.year, plan.month)
    figures = {}
    for a, (requests, successes, slots, unavailable, data_quality) in enumerate(rows):
        fee = plan.fee(a)
        if not slots and fee is None:
            continue
        value = availability(month, unavailable)
        percent = compensation_percent(value, policy)
        figures[plan.app_id(a)] = {
            "requests": requests,
            "successes": successes,
            "unavailable_slots": unavailable,
            "data_quality_slots": data_quality,
            "availability_exact": str(value),
            "meets_sla": meets_target(value, policy),
            "compensation_percent": percent,
            "voucher": None if fee is None else format(voucher(fee, percent), "f"),
        }
    return Truth(
        figures,
        events=sum(row[0] + row[1] for row in rows),
        active_slots=sum(row[2] for row in rows),
        unavailable_slots=sum(row[3] for row in rows),
        data_quality_slots=sum(row[4] for row in rows),
    )


def figures_of(month: dict[str, Any]) -> dict[str, Any]:
    """The figures checked of a month's JSON (a statement's, or a month ledger's: ``month_to_json``)."""
    return {
        "requests": month["requests"],
        "successes": month["successes"],
        "unavailable_slots": month["unavailable_slots"],
        "data_quality_slots": month["data_quality_slots"],
        "availability_exact": month["availability_exact"],
        "meets_sla": month["meets_sla"],
        "compensation_percent": month["compensation"]["percent"],
        "voucher": month["compensation"]["voucher"],
    }


# --------------------------------------------------------------------------- Kafka


def config_for(directory: Path, tag: str, plan: MonthPlan, target: RedisTarget) -> Path:
    """bench_scale's settings of a run (topics ``tag.*``, key prefix ``tag:``), with the plan's fees; its topics."""
    path = write_config(directory, tag, tag, plan, target)
    first = date(plan.year, plan.month, 1).isoformat()
    with path.open("a") as out:
        for a in range(plan.apps):
            fee = plan.fee(a)
            if fee is not None:
                out.write(f'[[apps]]\napp_id = "{plan.app_id(a)}"\nfees = {{ "{first}" = "{fee}" }}\n')
    return path


def event_time(text: str) -> int:
    """The ``ts`` of an event's JSON text (the plan's: compact, ``ts`` the first such field)."""
    found = EVENT_TIME.search(text)
    assert found is not None, text
    return int(found[1])


def send_stamped(sender: Sender, topic: str, partition: int, key: bytes, value: str, stamp_ms: int) -> None:
    """One record, stamped ``stamp_ms``; waits while librdkafka holds :data:`QUEUE_LIMIT` records unsent."""
    while len(sender.producer) >= QUEUE_LIMIT:
        sender.producer.poll(0.05)
    sender.producer.produce(topic, value.encode(), key, partition=partition, timestamp=stamp_ms)
    sender.records[(topic, partition)] += 1


def produce_month(settings: Settings, plan: MonthPlan, shape: str) -> int:
    """The plan's events, slot by slot, as ``shape`` records keyed by app, then the flush; the records written."""
    sender = Sender(settings)
    topics = (settings.topics.requests, settings.topics.successes)
    ids = [plan.app_id(a) for a in range(plan.apps)]
    keys = [app.encode() for app in ids]
    partitions = [partition_of(app) for app in ids]
    started, events, shown = time.monotonic(), 0, 0
    for s, a in plan.active_slots():
        for topic, texts in zip(topics, plan.slot_events(a, s), strict=True):
            events += len(texts)
            if not texts:
                continue
            if shape == "array":
                value = "[" + ",".join(texts) + "]"
                send_stamped(sender, topic, partitions[a], keys[a], value, max(map(event_time, texts)))
            else:
                for text in texts:
                    send_stamped(sender, topic, partitions[a], keys[a], text, event_time(text))
        if events - shown >= PROGRESS_EVERY:
            shown = events
            sender.producer.poll(0)
            print(f"    {events:,} events sent ({time.monotonic() - started:.0f} s)", flush=True)
    sender.flush()
    ends = end_offsets(settings, list(topics))
    if {tp: n for tp, n in ends.items() if n} != dict(sender.records):
        raise RuntimeError(f"end offsets {ends} differ from the records produced {dict(sender.records)}")
    flush_stream_time(settings, plan, plan.flush_ms)
    return sum(sender.records.values()) + 2 * PARTITIONS


# --------------------------------------------------------------------------- a command, timed and watched


class Namespace:
    """The shards of a namespace (the live one, or a replay's): its progress, and an app's keys.

    ``markers``: (app, slot) of some slots of the plan, whose ``slot:`` keys stay until the namespace is removed:
    the first of them gone tells its removal has begun (a replay's, after its statements).
    """

    def __init__(self, prefix: str, settings: Settings, markers: list[tuple[str, int]] | None = None) -> None:
        self.prefix = prefix
        self.shards = [Keys(p) for p in shard_prefixes(prefix, settings.redis_shards, settings.redis_cluster)]
        self.markers = [self.keys_of(app).slot(app, slot_ms) for app, slot_ms in markers or ()]

    def keys_of(self, app_id: str) -> Keys:
        return self.shards[shard_of(app_id, len(self.shards))]

    def progress(self, client: Any) -> tuple[int, int, int, int]:
        """Records applied in every shard (each partition's least offset over the shards, plus one), open slots,
        month ledgers due, markers present."""
        pipe = client.pipeline(transaction=False)
        for keys in self.shards:
            pipe.hgetall(keys.offsets)
            pipe.zcard(keys.open)
            pipe.scard(keys.ledgerdue)
        for key in self.markers:
            pipe.exists(key)
        replies = pipe.execute()
        offsets = replies[0 : 3 * len(self.shards) : 3]
        applied = sum(min(int(o.get(tp, -1)) for o in offsets) + 1 for tp in set().union(*offsets))
        shards = replies[: 3 * len(self.shards)]
        return applied, sum(shards[1::3]), sum(shards[2::3]), sum(replies[3 * len(self.shards) :])


def replay_namespace(target: RedisTarget, tag: str, plan: MonthPlan, settings: Settings) -> Namespace | None:
    """The namespace of the replay of the plan's month under ``tag`` (its prefix has a random token), once it
    exists; its markers, :data:`MARKERS` slots of the plan."""
    for key in target.scan(f"{glob_escape(tag)}-replay-{plan.name}-*meta"):
        markers = [(plan.app_id(a), plan.slot_ms(s)) for s, a in islice(plan.active_slots(), MARKERS)]
        return Namespace(key[: key.index(":") + 1], settings, markers)
    return None


class Sample(NamedTuple):
    """What a :class:`Watch` saw at ``seconds`` after the command's start: Redis's keys (a cluster's masters
    summed); of the command's namespace, the records applied, the slots open, the month ledgers due and the
    markers present."""

    seconds: float
    keys: int
    applied: int
    open: int
    ledgers_due: int
    markers: int


class Watch(Sampler):
    """bench_replay's sampler of a command's resident memory (its children's too) and Redis's ``used_memory``,
    every :data:`POLL_S`, which also records Redis's key count and the progress of the command's namespace
    (``find`` it: a replay's prefix is known only once it exists)."""

    def __init__(self, pid: int, target: RedisTarget, find: Callable[[], Namespace | None], log: Path) -> None:
        self.target, self.find, self.started = target, find, time.monotonic()
        self.namespace: Namespace | None = None
        self.samples: list[Sample] = []
        super().__init__(pid, target.client, log, POLL_S)

    def _run(self) -> None:
        shown = time.monotonic()
        while not self._stop.wait(self.every_s):
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
            try:
                self.peak_redis_mb = max(self.peak_redis_mb, self.target.used_memory() / (1 << 20))
                self.samples.append(self._sample())
            except Exception as error:  # noqa: BLE001 - a missed sample; the next one will do
                print(f"    (watch: {type(error).__name__}: {error})", flush=True)
            if time.monotonic() - shown >= SHOW_EVERY_S:
                shown = time.monotonic()
                said = self.log.read_text(errors="replace").splitlines()[-1:]
                print(f"    [{shown - self.started:.0f} s] {''.join(said)}", flush=True)

    def _sample(self) -> Sample:
        if self.namespace is None:
            self.namespace = self.find()
        progress = self.namespace.progress(self.target.client) if self.namespace else (0, 0, 0, 0)
        keys = sum(int(info.get("db0", {}).get("keys", 0)) for info in self.target.masters("keyspace").values())
        return Sample(time.monotonic() - self.started, keys, *progress)


def phases(samples: list[Sample], seconds: float, statements: bool) -> dict[str, float | None]:
    """Where a command's time went, from its samples: starting until its namespace holds a first applied record;
    counting until it holds every record (slots close meanwhile, as event time passes); closing until no slot is
    open (but what stays open past the month) and no ledger due; with ``statements`` (a replay), building them
    until its namespace's removal begins (a marker is gone); the rest (removal, output) until its exit.

    Each boundary is known to within :data:`POLL_S`; None: not seen (the command failed, or was too quick).
    """
    most = max((s.applied for s in samples), default=0)
    begun = next((i for i, s in enumerate(samples) if s.applied), None)
    counted = next((i for i, s in enumerate(samples) if most and s.applied == most), None)
    closed = removing = None
    if counted is not None:
        least_open = min(s.open for s in samples[counted:])
        closed = next((i for i in range(counted, len(samples)) if samples[i].open == least_open), None)
        closed = next((i for i in range(closed or counted, len(samples)) if not samples[i].ledgers_due), None)
    if closed is not None:
        present = samples[closed].markers
        removing = next((i for i in range(closed, len(samples)) if samples[i].markers < present), None)
    marks = [begun, counted, closed] + ([removing] if statements else [])
    names = ["start_s", "count_s", "close_s"] + (["statements_s"] if statements else []) + ["rest_s"]
    times = [0.0, *(None if i is None else samples[i].seconds for i in marks), seconds]
    return {
        name: None if begin is None or end is None else end - begin
        for name, begin, end in zip(names, times, times[1:], strict=False)
    }


@dataclass
class Command:
    """One command's run: how long, how much memory, what it said."""

    name: str
    seconds: float = 0.0
    status: int | None = None
    peak_rss_mb: float = 0.0
    redis_before_mb: float = 0.0
    redis_peak_mb: float = 0.0
    phases: dict[str, float | None] = field(default_factory=dict)
    summary: str = ""
    said: dict[str, int] = field(default_factory=dict)
    """The counts its summary line gives: slots closed, refused (replay), dead letters (rebuild)."""
    samples: list[Sample] = field(default_factory=list)
    """What the watch saw, every :data:`POLL_S` (kept with the figures)."""


def run_command(
    name: str,
    args: list[str],
    config: Path,
    target: RedisTarget,
    directory: Path,
    find: Callable[[], Namespace | None],
    timeout_s: float,
    profile: bool,
) -> tuple[Command, Path]:
    """``sla-stream ARGS --config CONFIG``, timed and watched until it exits; what it did, and its stdout's file."""
    out, log = directory / f"{name}.out", directory / f"{name}.log"
    result = Command(name, redis_before_mb=target.used_memory() / (1 << 20))
    command = [sys.executable, "-m", "stream.cli", *args, "--config", str(config)]
    with out.open("w") as stdout, log.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=directory, env=target.environ())
    watch = Watch(proc.pid, target, find, log)
    spy = profiler(proc.pid, directory / f"{name}.spy.txt") if profile else None
    try:
        result.status = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        result.seconds = time.monotonic() - watch.started
        watch.stop()
    if spy is not None:
        spy.wait(60)
        show_profile(name, directory / f"{name}.spy.txt")
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    result.summary = lines[-1] if lines else "(no output)"
    result.said = {what: int(n.replace(",", "")) for n, what in COUNT.findall(result.summary)}
    result.peak_rss_mb, result.redis_peak_mb = watch.peak_rss_mb, watch.peak_redis_mb
    result.samples = watch.samples
    result.phases = phases(watch.samples, result.seconds, statements=name.endswith("replay"))
    return result, out


def profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` and its child processes until it exits."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--rate", "50", "--nonblocking"]
    return subprocess.Popen(
        [*command, "--format", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def show_profile(name: str, path: Path) -> None:
    if path.exists() and path.stat().st_size:
        kept = OUT_DIR / path.name
        kept.write_bytes(path.read_bytes())
        print(f"    profile of {name} ({kept.relative_to(REPO)}):")
        print_profile(kept)
        print_busy_profile(kept)


# --------------------------------------------------------------------------- checks


def compare(who: str, found: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> str:
    """ "ok (N apps)", or how many apps differ and the first few."""
    wrong = [
        f"{app}: {found.get(app)} for {expected.get(app)}"
        for app in sorted(found.keys() | expected.keys())
        if found.get(app) != expected.get(app)
    ]
    verdict = f"ok ({len(expected):,} apps)" if not wrong else f"{len(wrong):,} apps differ, e.g. {wrong[:3]}"
    print(f"    check {who}: {verdict}", flush=True)
    return verdict


def live_ledgers(target: RedisTarget, namespace: Namespace, plan: MonthPlan) -> dict[str, dict[str, Any]]:
    """The month ledger the live closer saved for every app of the plan that has one."""
    first = date(plan.year, plan.month, 1)
    ids = [plan.app_id(a) for a in range(plan.apps)]
    ledgers = {}
    for start in range(0, len(ids), 2_000):
        chunk = ids[start : start + 2_000]
        pipe = target.client.pipeline(transaction=False)
        for app in chunk:
            pipe.get(namespace.keys_of(app).month(app, first))
        ledgers |= {app: json.loads(raw) for app, raw in zip(chunk, pipe.execute(), strict=True) if raw}
    return ledgers


@dataclass
class ShapeRun:
    """One record shape: produced, replayed, rebuilt, checked."""

    shape: str
    events: int = 0
    records: int = 0
    produce_s: float = 0.0
    commands: list[Command] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)
    live_keys: dict[str, dict[str, float]] = field(default_factory=dict)
    """The rebuilt live state's keys by kind: how many, and their bytes (``bench_scale.weigh``)."""
    error: str | None = None


def measure_shape(shape: str, plan: MonthPlan, truth: Truth, target: RedisTarget, args: argparse.Namespace) -> ShapeRun:
    """The plan's events in topics of their own, replayed, then rebuilt into a live namespace; checked; removed."""
    run = ShapeRun(shape, truth.events + 2 * PARTITIONS)  # and the flush: a request and a success a partition
    tag = f"bmonth-{uuid.uuid4().hex[:8]}-{shape}"
    directory = Path(tempfile.mkdtemp(prefix=f"sla-{tag}-"))
    print(f"\n{shape}: topics and key prefix {tag} ({target.describe()})", flush=True)
    config = config_for(directory, tag, plan, target)
    settings = load_settings(config, target.environ())
    try:
        produced = time.monotonic()
        run.records = produce_month(settings, plan, shape)
        run.produce_s = time.monotonic() - produced
        print(f"    {run.records:,} records produced in {run.produce_s:.0f} s", flush=True)
        replay_args = ["replay", "--month", plan.name, "--format", "json"]
        replay_args += ["--processes", str(args.processes)] if args.processes else []

        def find() -> Namespace | None:
            return replay_namespace(target, tag, plan, settings)

        replay, out = run_command(
            f"{shape}-replay", replay_args, config, target, directory, find, args.timeout, args.profile
        )
        run.commands.append(replay)
        print_command(run, replay)
        if replay.status != 0:
            raise RuntimeError(f"replay exited with {replay.status}: {replay.summary}; see {directory}")
        statements = {s["app_id"]: s for s in json.loads(out.read_text())}
        run.checks["replay = truth"] = compare(
            "replay = truth", {app: figures_of(s) for app, s in statements.items()}, truth.figures
        )
        run.checks["replay slots closed"] = said_check(replay, "slots closed", truth.active_slots)
        run.checks["replay refused"] = said_check(replay, "refused", 0)

        live = Namespace(settings.key_prefix, settings)
        rebuild, _ = run_command(
            f"{shape}-rebuild", ["rebuild"], config, target, directory, lambda: live, args.timeout, args.profile
        )
        run.commands.append(rebuild)
        print_command(run, rebuild)
        if rebuild.status != 0:
            raise RuntimeError(f"rebuild exited with {rebuild.status}: {rebuild.summary}; see {directory}")
        ledgers = live_ledgers(target, live, plan)
        traffic = {app: f for app, f in truth.figures.items() if f["requests"] or f["successes"]}
        run.checks["live = truth"] = compare(
            "live = truth", {app: figures_of(ledger) for app, ledger in ledgers.items()}, traffic
        )
        run.checks["live = replay"] = compare(
            "live = replay (every ledger figure)",
            ledgers,
            {
                app: {k: v for k, v in s.items() if k not in STATEMENT_ONLY}
                for app, s in statements.items()
                if app in traffic
            },
        )
        run.checks["rebuild slots closed"] = said_check(rebuild, "slots closed", truth.active_slots)
        run.checks["rebuild dead letters"] = said_check(rebuild, "dead letters", 0)
        run.live_keys = weigh(Deployment(config, target, plan, args.timeout), WEIGH_SAMPLE)
        print_weights(run.live_keys, truth.active_slots)
    except Exception as error:  # noqa: BLE001 - record it, clean up, go on with the next shape
        run.error = f"{type(error).__name__}: {error}"
        print(f"    FAILED: {run.error}", flush=True)
    finally:
        if args.keep:
            print(f"    kept: topics {tag}.*, Redis keys {tag}*, settings {config}", flush=True)
        else:
            target.delete_prefix(tag)
            delete_topics(settings, tag, [])
        if args.keep or run.error:
            print(f"    the commands' output and logs are in {directory}", flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return run


def print_weights(weights: dict[str, dict[str, float]], slots: int) -> None:
    """The live state's keys by kind, and their bytes per active slot of the month (what a replay holds too)."""
    total = sum(kind["bytes"] for kind in weights.values())
    print(
        f"    live state: {sum(kind['keys'] for kind in weights.values()):,.0f} keys, {total / (1 << 20):,.0f} MB "
        f"(MEMORY USAGE), {total / max(1, slots):,.0f} bytes per active slot: "
        + ", ".join(
            f"{name} {kind['keys']:,.0f} ({kind['bytes'] / max(1, slots):,.0f} B/slot)"
            for name, kind in sorted(weights.items(), key=lambda item: -item[1]["bytes"])
        ),
        flush=True,
    )


def said_check(command: Command, what: str, expected: int) -> str:
    said = command.said.get(what)
    verdict = "ok" if said == expected else f"{said} for {expected:,}"
    print(f"    check {command.name} {what}: {verdict} ({expected:,})", flush=True)
    return verdict


# --------------------------------------------------------------------------- output


PHASES = (
    ("start_s", "start"),
    ("count_s", "count"),
    ("close_s", "close"),
    ("statements_s", "stmts"),
    ("rest_s", "rest"),
)


def print_command(run: ShapeRun, c: Command) -> None:
    spans = ", ".join(f"{label} {fmt(c.phases[key], '.1f')} s" for key, label in PHASES if key in c.phases)
    print(
        f"    {c.name}: exit {c.status}, {c.seconds:.1f} s, {run.events / c.seconds:,.0f} events/s, peak RSS "
        f"{c.peak_rss_mb:.0f} MB, Redis {c.redis_before_mb:.0f} -> {c.redis_peak_mb:.0f} MB; {spans}\n"
        f"    {c.summary}",
        flush=True,
    )


def print_table(runs: list[ShapeRun], plan: MonthPlan) -> None:
    print(
        f"\nmonth-end of {plan.name}, {plan.apps:,} apps\n"
        f"{'run':<16} {'events':>11} {'records':>11} {'seconds':>8} {'events/s':>9} {'slots closed':>12} "
        f"{'peak RSS MB':>11} {'Redis peak MB':>15}" + "".join(f" {label + ' s':>8}" for _, label in PHASES)
    )
    for run in runs:
        for c in run.commands:
            redis_mb = f"{c.redis_peak_mb:.0f} (+{c.redis_peak_mb - c.redis_before_mb:.0f})"
            print(
                f"{c.name:<16} {run.events:>11,} {run.records:>11,} {c.seconds:>8.1f} {run.events / c.seconds:>9,.0f} "
                f"{fmt(c.said.get('slots closed')):>12} {c.peak_rss_mb:>11.0f} {redis_mb:>15}"
                + "".join(f" {fmt(c.phases.get(key), '.1f'):>8}" for key, _ in PHASES)
            )
    print(
        f"\nat these rates, {FULL_SIZE:,} events of {plan.apps:,} apps "
        f"(linear in events; target {TARGET_S / 60:.0f} min):"
    )
    for run in runs:
        for c in run.commands:
            at_full = c.seconds * FULL_SIZE / run.events
            verdict = "within" if at_full < TARGET_S else "NOT within"
            print(f"  {c.name}: {at_full:,.0f} s ({at_full / 60:.0f} min) [{verdict} the target]")
    print("\nchecks:")
    for run in runs:
        for name, verdict in run.checks.items():
            print(f"  {run.shape} {name}: {verdict}")
        if run.error:
            print(f"  {run.shape} FAILED: {run.error}")


def describe_truth(truth: Truth, plan: MonthPlan) -> str:
    tiers = truth.tiers()
    return (
        f"{truth.events:,} events in {truth.active_slots:,} active slots ({plan.active_per_slot:,.1f} apps a slot, "
        f"{truth.active_slots / plan.apps:,.0f} slots an app of {plan.slots:,}); {truth.unavailable_slots:,} "
        f"unavailable, {truth.data_quality_slots:,} data quality; months meeting the SLA {tiers[0]:,}, breaching "
        + ", ".join(f"{tiers[p]:,} at {p}%" for p in sorted(tiers) if p)
    )


# --------------------------------------------------------------------------- main


def shape_list(text: str) -> list[str]:
    """``--shapes``: array, single, or both (in the order given)."""
    shapes = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not shapes or not set(shapes) <= {"array", "single"}:
        raise argparse.ArgumentTypeError(f"array, single or both, got {text!r}")
    return shapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000, help="apps in the plan (default 10,000)")
    parser.add_argument("--events", type=int, default=FULL_SIZE, help="events in the month, about (default 50,000,000)")
    parser.add_argument("--requests-per-slot", type=int, default=10, help="requests in an active slot (default 10)")
    parser.add_argument(
        "--month", type=calendar_month_argument, metavar="YYYY-MM", help="the month (default: the last one)"
    )
    parser.add_argument(
        "--shapes", type=shape_list, default="array,single", help="record shapes, of array,single (default both)"
    )
    parser.add_argument("--redis", choices=("single", "cluster"), default="single", help="the Redis (default single)")
    parser.add_argument(
        "--shards", default="single=1,cluster=6", help="[redis] shards: N, or single=N,cluster=M (default 1 and 6)"
    )
    parser.add_argument("--processes", type=int, default=0, help="replay's --processes (default: its own, a core each)")
    parser.add_argument("--seed", type=int, default=19, help="the plan's seed (default 19)")
    parser.add_argument("--timeout", type=float, default=3_600.0, help="bound on each command (default 3,600 s)")
    parser.add_argument("--profile", action="store_true", help="py-spy on each command (its processes too)")
    parser.add_argument("--keep", action="store_true", help="keep each shape's topics and Redis keys")
    parser.add_argument("--label", default="", help="a note kept with the figures")
    args = parser.parse_args()
    if not 1 <= args.apps <= 1_000_000 or args.requests_per_slot < 1 or args.events < 1:
        parser.error("--apps from 1 to 1,000,000; --requests-per-slot and --events at least 1")
    try:
        shards = parse_shards(args.shards)[args.redis]
    except ValueError as error:
        parser.error(f"--shards: {error}")
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile: {PY_SPY} not found (`make bench-venv`)")
    base = load_settings()
    year, month = args.month or previous_month(datetime.now(base.policy.timezone).date())
    check_month(parser, year, month)
    plan = MonthPlan.of_month(year, month, args.apps, args.events, args.requests_per_slot, base, args.seed)
    if plan.active_per_slot > plan.apps:
        parser.error(f"{args.events:,} events do not fit {args.apps:,} apps' month at {args.requests_per_slot} a slot")
    print(
        f"bench-monthend: {plan.name}, {args.apps:,} apps, about {args.events:,} events, shapes {args.shapes}, Redis "
        f"{args.redis} ({shards} shards); code {STREAM_DIR} ({git(STREAM_DIR, 'rev-parse', '--short', 'HEAD')}); "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    started = time.monotonic()
    truth = compute_truth(plan, base.policy)
    print(f"truth ({time.monotonic() - started:.0f} s): {describe_truth(truth, plan)}", flush=True)
    tiers = truth.tiers()
    if not (truth.unavailable_slots and truth.data_quality_slots and tiers[0] and len(tiers) > 1):
        sys.exit(
            "bench-monthend: the plan lacks unavailable or data-quality slots, or met or breached months: more events"
        )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = redis_target(args.redis, base, shards)
    runs: list[ShapeRun] = []
    try:
        for shape in args.shapes:
            runs.append(measure_shape(shape, plan, truth, target, args))
    finally:
        target.close()
        out = OUT_DIR / f"{stamp}-{args.apps}apps.json"
        meta = {
            "month": plan.name,
            "plan": {**plan.__dict__, "failure_rates": FAILURE_RATES, "data_quality_rate": DATA_QUALITY_RATE},
            "truth": {k: v for k, v in truth.__dict__.items() if k != "figures"} | {"tiers": dict(truth.tiers())},
            "redis": {"kind": args.redis, "shards": shards, "url": target.url},
            "cores": os.cpu_count(),
            "loadavg_end": os.getloadavg(),
            "seconds": time.monotonic() - started,
            "commit": git(STREAM_DIR, "rev-parse", "HEAD"),
            "stream_changed_from_commit": bool(git(STREAM_DIR, "status", "--porcelain", ".")),
            "label": args.label,
        }
        out.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2, default=str))
        (OUT_DIR / "latest.json").write_text(out.read_text())
    print_table(runs, plan)
    print(f"\nfigures: {out.relative_to(REPO)}; {(time.monotonic() - started) / 60:.1f} min")
    if any(verdict != "ok" and not verdict.startswith("ok ") for run in runs for verdict in run.checks.values()):
        return 1
    return 2 if any(run.error for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
