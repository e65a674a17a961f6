"""The live path's parts wired together on the real Redis, with no Kafka and no Faust: for component tests.

What stands in for Kafka is plain and in memory: records are built by hand
(:func:`request_record`), dead letters and verdict messages land in lists,
the consumer's seeks are recorded, and the wall clock is a :class:`FakeClock`
a test moves. Everything else is the code the worker runs: the store and its
Lua steps, the namespace guard, the ingester, the closer, the exemption
follower, the idle tracker.

Example (inside a test)::

    def test_something(live):
        async def steps(kit: LiveKit) -> None:
            await kit.count("request", [kit.request(0, "r-1", APP, ts)])
            ...
        live(steps)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis

from stream.config import Settings, load_settings
from stream.events import RequestEvent, SuccessEvent, to_record
from stream.formats import DeadLetter
from stream.live.clock import ClockTiming
from stream.live.closer import Closer, CloserLimits, TickResult
from stream.live.cursors import Cursors
from stream.live.exemptions import ExemptionFollower
from stream.live.health import Health
from stream.live.hiredis_packing import use_hiredis_packing
from stream.live.ingest import Ingester, Record
from stream.live.namespace import NamespaceGuard
from stream.live.store import Applied, Fence, Store
from stream.sla.counting import EventKind

TOPICS = {"request": "requests", "success": "successes"}
PARTITIONS = 2
INPUT_TPS = [f"{topic}:{p}" for topic in TOPICS.values() for p in range(PARTITIONS)]


@dataclass
class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    now_s: float

    def __call__(self) -> float:
        return self.now_s

    @property
    def now_ms(self) -> int:
        return int(self.now_s * 1000)


@dataclass
class LiveKit:
    """One namespace's live path: the parts of a worker, Kafka replaced by lists."""

    settings: Settings
    store: Store
    clock: FakeClock
    health: Health
    guard: NamespaceGuard
    cursors: Cursors
    ingester: Ingester
    closer: Closer
    exemptions: ExemptionFollower
    dead_letters: list[DeadLetter] = field(default_factory=list)
    verdict_messages: list[tuple[str, str]] = field(default_factory=list)
    seeks: list[tuple[str, int]] = field(default_factory=list)
    """``(topic:partition, offset sought)`` in order: where the consumer would read next."""
    next_offsets: dict[str, int] = field(default_factory=dict)

    def _offset(self, kind: EventKind, partition: int) -> int:
        tp = f"{TOPICS[kind]}:{partition}"
        offset = self.next_offsets.get(tp, 0)
        self.next_offsets[tp] = offset + 1
        return offset

    def request(self, partition: int, event_id: str, app_id: str, ts: int) -> Record:
        """A request record at the partition's next offset."""
        event = RequestEvent(event_id, app_id, "room", "user", ts)
        return Record(TOPICS["request"], partition, self._offset("request", partition), _value(event))

    def success(self, partition: int, event_id: str, request_id: str, app_id: str, ts: int, request_ts: int) -> Record:
        """A success record at the partition's next offset; it counts in its request's slot."""
        event = SuccessEvent(event_id, request_id, app_id, "room", "user", ts, request_ts)
        return Record(TOPICS["success"], partition, self._offset("success", partition), _value(event))

    def raw(self, kind: EventKind, partition: int, value: bytes) -> Record:
        """Any bytes as a record at the partition's next offset."""
        return Record(TOPICS[kind], partition, self._offset(kind, partition), value)

    async def move_stream_time(self, ts: int) -> None:
        """Move every input partition's stream time to ``ts`` with one event of app ``flush`` each."""
        for p in range(PARTITIONS):
            await self.count("request", [self.request(p, f"r-flush-{p}-{ts}", "flush", ts)])
            await self.count("success", [self.success(p, f"s-flush-{p}-{ts}", f"r-flush-{p}-{ts}", "flush", ts, ts)])

    @property
    def fence(self) -> Fence:
        assert self.guard.fence is not None, "the namespace is not open"
        return self.guard.fence

    async def count(self, kind: EventKind, records: Sequence[Record]) -> None:
        """Hand records to the ingester as a worker would; positions each partition first, as after a rebalance."""
        for tp in sorted({f"{r.topic}:{r.partition}" for r in records}):
            if self.cursors.get(tp) is None:
                await self.ingester.position(tp)
        await self.ingester.apply(kind, records)

    async def tick(self) -> TickResult:
        return await self.closer.tick(self.fence)

    def verdicts(self) -> list[dict[str, Any]]:
        """Every verdict message published so far, decoded, in order."""
        return [json.loads(value) for _, value in self.verdict_messages]


def make_kit(redis: Redis, prefix: str, clock: FakeClock, **stream: Any) -> LiveKit:
    """The live path over ``redis`` under ``prefix``; ``stream`` overrides settings (``grace_ms=0``...)."""
    defaults = load_settings()
    topics = replace(defaults.topics, requests=TOPICS["request"], successes=TOPICS["success"])
    settings = replace(defaults, key_prefix=prefix, topics=topics, **stream)
    store = Store.of(redis, settings)
    health = Health(prefix)
    guard = NamespaceGuard(store, health, prefix, poll_s=0.01)
    cursors = Cursors()
    kit_box: list[LiveKit] = []

    async def send_dead_letter(letter: DeadLetter) -> None:
        kit_box[0].dead_letters.append(letter)

    async def send_verdicts(messages: Sequence[tuple[str, str]]) -> None:
        kit_box[0].verdict_messages.extend(messages)

    async def reseek(tp: str, applied: Applied) -> None:
        kit_box[0].seeks.append((tp, applied.least + 1))
        cursors.sought(tp, applied.shards)

    ingester = Ingester(
        store,
        settings.policy.timezone,
        lambda: settings.event_bounds(clock.now_ms),
        send_dead_letter,
        health,
        guard,
        cursors,
        reseek,
    )
    timing = ClockTiming.of(settings)
    closer = Closer(store, settings, INPUT_TPS, send_verdicts, timing, CloserLimits.of(settings), clock)
    kit = LiveKit(
        settings,
        store,
        clock,
        health,
        guard,
        cursors,
        ingester,
        closer,
        ExemptionFollower(store, health, send_dead_letter),
    )
    kit_box.append(kit)
    return kit


def run_kit(redis_url: str, prefix: str, steps: Callable[[LiveKit], Awaitable[None]], **stream: Any) -> None:
    """Open a fresh namespace, run ``steps`` on its kit in a new event loop, close the client."""

    async def main() -> None:
        redis = use_hiredis_packing(Redis.from_url(redis_url, decode_responses=True))  # as the workers' client
        try:
            kit = make_kit(redis, prefix, FakeClock(now_s=START_MS / 1000 + 86_400), **stream)
            await kit.guard.open(None)
            await steps(kit)
        finally:
            await redis.aclose()

    asyncio.run(main())


START_MS = 1_795_699_200_000
"""2026-11-26T16:00:00+08:00, a slot start: the time the component tests' events are placed around."""


def _value(event: RequestEvent | SuccessEvent) -> bytes:
    return json.dumps(to_record(event)).encode()
