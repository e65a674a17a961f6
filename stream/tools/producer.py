"""``sla-stream simulate --kafka``: the simulator's events sent to the input topics instead of a file.

Requests go to ``[kafka.topics] requests``, successes to ``successes``, as
the event contract's JSON without ``"type"`` (the topic says it). Each record
is keyed by the event's app, room or user (``--key``, default room), so a
key's events stay in order on one partition. With ``--batch N`` (N > 1) a
record's value is a JSON array of up to N events of one kind and one key
that arrived within 5 seconds of each other, as a batching producer or log
shipper sends them; with ``--batch 1`` it is one event object. Record
timestamps are the wall-clock time of sending (the producer's default): the
broker's retention counts from them, and event time travels inside the JSON.

Timing. Every event has an arrival time (its ``ts``, or later for late
successes and second deliveries). At ``--speed 0`` (default) events are sent
as fast as the broker takes them; at ``--speed S`` the period is replayed S
times faster than real time, each event sent when the accelerated clock
reaches its arrival time. Either way **no event is sent before the wall
clock has reached its arrival time**, so an event's times are never ahead of
the clock by more than the few milliseconds a wait is rounded to. A period
that reaches past now is therefore caught up with, then sent live.

``--duration D`` asks for live traffic: the period of length D placed so
that it ends when the accelerated clock meets the wall clock, i.e. it ends at
``now + min(D / S, D)`` (at speed 0: now). At ``--speed 60 --duration 2h``
the run takes 2 minutes and replays the 2 hours that end 2 minutes from
now; event times start about 118 minutes behind the clock and reach it at
the end. At a speed below 1 the period starts now and runs behind the clock.
Late successes of the period's last minutes follow at real time.

Example:
    >>> live_period(duration_ms=7_200_000, speed=Fraction(60), now_ms=1_000_000_000_000)
    (999992920000, 1000000120000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.events import Event, to_record
from stream.kafka_security import aiokafka_options
from stream.tools import topics
from stream.tools.simulate import PlanError, TrafficPlan, duration_ms, generate_timed

MAX_BATCH = 1000
"""Events per record at most: some 250 KB, well inside Kafka's default 1 MB message limit."""
BATCH_WINDOW_MS = 5_000
"""A record holds events that arrived within this span of its first, like a shipper flushing every few seconds."""
KEY_FIELDS = {"app": "app_id", "room": "room_id", "user": "user_id"}
COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd")
"""The batch codecs Kafka producers use; the worker reads all of them (pyproject.toml pins the codec libraries)."""
_SHORTEST_WAIT_MS = 2
"""Waits shorter than this are not slept: an event is never sent more than this much early."""
_NOTE_WAIT_MS = 1_000
_SWEEP_EVERY = 10_000
"""Acknowledgements are counted every this many records (a callback per record costs more than the send)."""
_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class KafkaOptions:
    speed: Fraction = Fraction(0)
    """Event time runs this many times faster than the wall clock; 0: as fast as possible."""
    batch: int = 1
    key: str = "room"
    duration_ms: int | None = None
    """Live traffic of this length ending now (see :func:`live_period`); None: the --month or --start/--end given."""
    compression: str | None = None
    """The producer's ``compression.type`` (gzip, snappy, lz4, zstd); None: uncompressed batches."""


def live_period(duration_ms: int, speed: Fraction, now_ms: int) -> tuple[int, int]:
    """The period of ``duration_ms`` whose replay at ``speed`` from ``now_ms`` never runs ahead of the wall clock.

    The replay takes ``duration_ms / speed``; the period ends when it does
    (speed >= 1), or, slower than real time, starts now; at speed 0 it ends now.
    """
    run_ms = duration_ms * speed.denominator // speed.numerator if speed else 0
    end = now_ms + min(run_ms, duration_ms)
    return end - duration_ms, end


def due_ms(arrival_ms: int, start_ms: int, run_start_ms: int, speed: Fraction) -> int:
    """When to send an event arriving at ``arrival_ms``: when the accelerated clock reaches it, never earlier."""
    if not speed:
        return arrival_ms
    paced = run_start_ms - (-(arrival_ms - start_ms) * speed.denominator // speed.numerator)  # ceiling
    return max(paced, arrival_ms)


class PackedRecord(NamedTuple):
    """One Kafka record to send: events of one kind and one key."""

    kind: str
    key: str
    events: list[Event]

    def value(self, array: bool) -> bytes:
        body = [to_record(event) for event in self.events] if array else to_record(self.events[0])
        return _encode(body).encode()


class Packer:
    """Groups events, in arrival order, into records of up to ``batch`` events of one kind and one key.

    A record is complete when it holds ``batch`` events, or when an event
    arrives ``window_ms`` after its first; :meth:`drain` completes them all.
    A key's events keep their order across its records.
    """

    def __init__(self, batch: int, key_field: str, window_ms: int = BATCH_WINDOW_MS) -> None:
        self.batch, self.key_field, self.window_ms = batch, key_field, window_ms
        self._open: dict[tuple[str, str], tuple[int, list[Event]]] = {}  # oldest first

    def add(self, arrival_ms: int, event: Event) -> list[PackedRecord]:
        """Take one event; return the records it completes (none, or some)."""
        done = []
        while self._open:
            oldest = next(iter(self._open))
            first_ms, events = self._open[oldest]
            if arrival_ms - first_ms < self.window_ms:
                break
            del self._open[oldest]
            done.append(PackedRecord(*oldest, events))
        slot = (event.kind, getattr(event, self.key_field))
        events = self._open.setdefault(slot, (arrival_ms, []))[1]
        events.append(event)
        if len(events) >= self.batch:
            del self._open[slot]
            done.append(PackedRecord(*slot, events))
        return done

    def drain(self) -> list[PackedRecord]:
        """Every record still open, oldest first."""
        done = [PackedRecord(*slot, events) for slot, (_, events) in self._open.items()]
        self._open.clear()
        return done


@dataclass
class Delivery:
    """What the broker acknowledged: records are counted once their send is done."""

    events: Counter[str] = field(default_factory=Counter)
    records: int = 0
    failed: int = 0
    first_error: str = ""
    pending: list[tuple[asyncio.Future, str, int]] = field(default_factory=list)
    next_sweep: int = _SWEEP_EVERY

    def sent(self, future: asyncio.Future, record: PackedRecord) -> None:
        self.pending.append((future, record.kind, len(record.events)))
        if len(self.pending) >= self.next_sweep:
            self.sweep()
            self.next_sweep = len(self.pending) + _SWEEP_EVERY  # sends still in flight are not swept again at once

    def sweep(self, final: bool = False) -> None:
        """Count the sends that are done; keep the others pending (``final``: count them as failed)."""
        waiting = []
        for future, kind, count in self.pending:
            if not future.done() and final:
                self.failed += count
                self.first_error = self.first_error or "no acknowledgement"
            elif not future.done():
                waiting.append((future, kind, count))
            elif future.cancelled() or future.exception():
                self.failed += count
                self.first_error = self.first_error or repr(future.exception() if not future.cancelled() else "cancel")
            else:
                self.events[kind] += count
                self.records += 1
        self.pending = waiting


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _produce(
    timed_events: Iterable[tuple[int, Event]],
    start_ms: int,
    run_start_ms: int,
    settings: Settings,
    options: KafkaOptions,
    delivery: Delivery,
    say: Callable[[str], None],
) -> None:
    topic = {"request": settings.topics.requests, "success": settings.topics.successes}
    array = options.batch > 1
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="sla-stream-simulate",
        acks="all",
        enable_idempotence=True,
        linger_ms=20 if not options.speed else 5,
        max_batch_size=512 * 1024,
        request_timeout_ms=topics.TIMEOUT_MS,
        compression_type=options.compression,
        **aiokafka_options(settings.kafka_security),
    )
    try:
        await asyncio.wait_for(producer.start(), topics.TIMEOUT_MS / 1000)
    except (KafkaError, OSError, TimeoutError) as error:
        await producer.stop()
        raise topics.unavailable(settings, error) from None

    async def send(records: list[PackedRecord]) -> None:
        for record in records:
            delivery.sent(await producer.send(topic[record.kind], record.value(array), key=record.key.encode()), record)

    packer = Packer(options.batch, KEY_FIELDS[options.key])
    noted = False
    try:
        for arrival, event in timed_events:
            due = due_ms(arrival, start_ms, run_start_ms, options.speed)
            wait = due - _now_ms()
            if wait >= _SHORTEST_WAIT_MS:
                await send(packer.drain())
                if not noted and due == arrival and wait >= _NOTE_WAIT_MS:
                    noted = True
                    say("sla-stream: caught up with the clock; the rest is sent as its time comes (Ctrl-C stops)")
                await asyncio.sleep(wait / 1000)
            await send(packer.add(arrival, event))
        await send(packer.drain())
    except asyncio.CancelledError:  # Ctrl-C: what was due is sent, then the interruption goes on
        await send(packer.drain())
        raise
    except KafkaError as error:
        raise topics.unavailable(settings, error) from None
    finally:
        await producer.stop()  # delivers whatever is pending first
        delivery.sweep(final=True)


@dataclass(frozen=True)
class Sent:
    """The outcome of a run, for the command's last line."""

    plan: TrafficPlan
    delivery: Delivery
    seconds: float
    settings: Settings

    def summary(self) -> str:
        sent = self.delivery.events
        total = sum(sent.values())
        rate = total / self.seconds if self.seconds > 0 else 0
        line = (
            f"sent {sent['request']:,} request and {sent['success']:,} success events for {len(self.plan.app_ids)} apps"
            f" in {self.delivery.records:,} records to {self.settings.topics.requests} and"
            f" {self.settings.topics.successes} in {self.seconds:.1f} s ({rate:,.0f} events/s)"
        )
        if self.delivery.failed:
            line += f"; {self.delivery.failed:,} events NOT delivered (first error: {self.delivery.first_error})"
        return line


def _check_input_topics(settings: Settings, say: Callable[[str], None]) -> None:
    """Refuse to send to a missing topic (the broker would create it with its defaults); warn of other problems."""
    specs = [spec for spec in topics.plan_topics(settings) if spec.setting in ("requests", "successes")]
    for status in topics.topic_statuses(settings, specs):
        if not status.exists:
            raise PlanError(status.problems[0])
        for problem in status.problems:
            say(f"sla-stream: warning: {problem}")


def send(
    settings: Settings,
    options: KafkaOptions,
    make_plan: Callable[[tuple[int, int] | None], TrafficPlan],
    say: Callable[[str], None],
) -> Sent:
    """Send the plan ``make_plan(period)`` makes to the input topics, following ``options``.

    ``period`` is the live period when ``options.duration_ms`` is set (None
    otherwise). Bad arguments raise :class:`PlanError` before any connection;
    a broker that does not answer raises :class:`topics.KafkaUnavailable`.
    """

    def plan_now() -> tuple[TrafficPlan, int]:
        now = _now_ms()
        period = live_period(options.duration_ms, options.speed, now) if options.duration_ms else None
        return make_plan(period), now

    plan, now = plan_now()  # arguments checked before connecting
    if plan.start_ms > now + _NOTE_WAIT_MS:
        raise PlanError("with --kafka the period cannot start in the future (events are never sent before their time)")
    _check_input_topics(settings, say)
    plan, run_start = plan_now()  # live periods end relative to the moment sending starts
    delivery = Delivery()
    started = time.monotonic()
    try:
        asyncio.run(_produce(generate_timed(plan), plan.start_ms, run_start, settings, options, delivery, say))
    except KeyboardInterrupt:
        say(f"sla-stream: interrupted: {Sent(plan, delivery, time.monotonic() - started, settings).summary()}")
        raise
    return Sent(plan, delivery, time.monotonic() - started, settings)


def _speed(text: str) -> Fraction:
    try:
        speed = Fraction(text)
    except (ValueError, ZeroDivisionError):
        speed = Fraction(-1)
    if speed < 0:
        raise PlanError(f"--speed must be a number at least 0 (0: as fast as possible), got {text!r}")
    return speed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sending to Kafka (with --kafka)")
    group.add_argument(
        "--speed", metavar="S", help="event time runs S times faster than the clock (default 0: as fast as possible)"
    )
    group.add_argument("--batch", type=int, metavar="N", help=f"events per record, 1 to {MAX_BATCH} (default 1)")
    group.add_argument("--key", choices=sorted(KEY_FIELDS), help="record key (default room)")
    group.add_argument("--duration", metavar="D", help="live traffic: a period of D (30m, 2h, 1d) ending now")
    group.add_argument("--compression", choices=COMPRESSIONS, help="compress the producer's batches (default: none)")


def options_from_args(args: argparse.Namespace) -> KafkaOptions | None:
    """The --kafka options (None without --kafka); any of them without --kafka, or a bad value, is a PlanError."""
    names = ("speed", "batch", "key", "duration", "compression")
    given = [f"--{name}" for name in names if getattr(args, name) is not None]
    if not args.kafka:
        if given:
            raise PlanError(f"{given[0]} applies only with --kafka")
        return None
    if args.duration is not None and (args.month or args.start or args.end):
        raise PlanError("--duration places the period before now: give it instead of --month or --start/--end")
    if args.duration is None and not (args.month or args.start or args.end):
        raise PlanError("give --duration D for live traffic, or --month YYYY-MM, or --start and --end")
    batch = 1 if args.batch is None else args.batch
    if not 1 <= batch <= MAX_BATCH:
        raise PlanError(f"--batch must be 1 to {MAX_BATCH}, got {batch}")
    return KafkaOptions(
        speed=_speed(args.speed) if args.speed is not None else Fraction(0),
        batch=batch,
        key=args.key or "room",
        duration_ms=duration_ms(args.duration, "--duration") if args.duration is not None else None,
        compression=args.compression,
    )
