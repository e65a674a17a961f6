"""The Redis layout of the live state, and the atomic steps that change it.

Redis is the one source of truth of the stream (DESIGN.md invariant 4). Every
change that must be exact is one Lua script, so it happens entirely or not at
all, whatever happens to the worker that sent it:

``apply_batch``
    counts one partition's batch into slots and records that partition's last
    applied offset and stream time in the same step; a batch at or below the
    recorded offset is skipped, so Kafka's redelivery after a crash counts
    nothing twice (invariant 1). Duplicate ``event_id``\\ s within a slot count
    once (a set of ids per slot). The caller says which applied offset it
    read from (``expected``): Redis being *behind* it means Redis lost writes
    (a restore, a lagging replica), and the batch is refused so the partition
    can be read again from Redis's offset, not counted across a gap.
``commit_verdict``
    stores a slot's verdict with the next revision only if the slot's counts
    and revision are still those the verdict was computed from, and queues it
    in the outbox for the verdicts topic; a slot therefore closes once and a
    late event that arrives meanwhile is never lost (invariant 3).

Both steps are fenced by the namespace's **generation** (``meta``): a
namespace is initialised with one, and a rebuild gives it a new one. A step
sent with another generation, or to a namespace whose ``meta`` is gone (Redis
restarted empty, keys flushed), changes nothing and says so, so a worker never
counts into a state that lost its past (:mod:`stream.live.lifecycle`).

Keys, all under one prefix (``sla:`` by default; tests use their own):

=============================  =========================================================
``meta``                       HASH generation, state (``live``/``rebuilding``), initialised_ms, seq (steps made)
``offsets``, ``streamtime``    HASH ``topic:partition`` → last applied offset, max event ts
``idle``                       HASH ``topic:partition`` → wall ms it was last seen caught up and idle
``deadletters``                HASH ``topic:partition`` → records refused
``apps``                       SET of app ids seen
``slot:{app}:{slot}``          HASH requests, successes, late_requests, late_successes
``ids:{app}:{slot}:{field}``   SET of event ids counted (dropped ``dedup_hold`` after the slot closes)
``day:{app}:{YYYY-MM-DD}``     HASH requests, successes of one local day
``open``                       ZSET ``app:slot`` → slot start, slots counted but not closed
``dirty``                      SET ``app:slot`` of closed slots to judge again (late event, exemption)
``verdict:{app}:{slot}``       HASH the latest verdict (see :class:`StoredVerdict`)
``unavailable:{app}``          ZSET slot starts whose latest verdict is unavailable by counts
``dataquality:{app}``          ZSET slot starts with more successes than requests
``idsheld``                    ZSET ``app:slot`` → stream time it was last judged, closed slots holding id sets
``ledgerdue``                  SET ``YYYY-MM:app`` of month ledgers to recompute (kept until recomputed)
``lastclosed``                 HASH app → start of its latest closed slot
``outbox``                     LIST of verdict messages not yet acknowledged by Kafka
``exemptions``                 HASH exemption id → JSON, from the exemptions topic
``month:{app}:{first day}``    STRING the service month's figures as JSON (the month ledger)
=============================  =========================================================

The scripts build key names from their arguments, so this layout needs a
single Redis server (or one hash slot), not a cluster.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from stream.sla.verdict import SlotCounts

COUNT_FIELDS = ("requests", "successes")

_SADD_CHUNK = 4000
"""Ids per SADD inside a script: Lua's ``unpack`` fails past about 8,000 values."""


def _fence(lost: str, other: str, rolled_back: str) -> str:
    """Lua that refuses a step: ``lost`` without a marker, ``other`` for another generation or state,
    ``rolled_back`` when the namespace's step counter is below one the caller has seen (Redis lost writes).

    Expects ``p`` (the prefix), ``generation``, ``state`` and ``min_seq`` (what
    the caller believes) as locals; leaves ``seq``, the counter now.
    """
    return f"""
local meta = redis.call('HMGET', p .. 'meta', 'generation', 'state', 'seq')
if not meta[1] then
  return {lost}
end
if meta[1] ~= generation or meta[2] ~= state then
  return {other}
end
local seq = tonumber(meta[3] or '0')
if seq < min_seq then
  return {rolled_back}
end
"""


_APPLY_BATCH = (
    """
local p = ARGV[1]
local tp = ARGV[2]
local min_offset = tonumber(ARGV[3])
local max_offset = tonumber(ARGV[4])
local stream_ms = tonumber(ARGV[5])
local field = ARGV[6]
local refused = tonumber(ARGV[7])
local generation, state = ARGV[8], ARGV[9]
local expected = tonumber(ARGV[10])
local min_seq = tonumber(ARGV[11])
"""
    + _fence(lost="{-3, -1, 0, 0, 0, 0}", other="{-4, -1, 0, 0, 0, 0}", rolled_back="{-6, -1, 0, 0, 0, seq}")
    + """
local applied = tonumber(redis.call('HGET', p .. 'offsets', tp) or '-1')
if applied < expected then
  return {-5, applied, 0, 0, 0, seq}
end
if max_offset <= applied then
  return {0, applied, 0, 0, 0, seq}
end
if min_offset <= applied then
  return {-1, applied, 0, 0, 0, seq}
end
local counted, duplicates, late = 0, 0, 0
local i = 12
while i <= #ARGV do
  local app, slot, day, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local sk = app .. ':' .. slot
  local ids = p .. 'ids:' .. sk .. ':' .. field
  local added = 0
  local first, last = i + 4, i + 3 + n
  while first <= last do
    local upto = math.min(first + CHUNK - 1, last)
    added = added + redis.call('SADD', ids, unpack(ARGV, first, upto))
    first = upto + 1
  end
  i = i + 4 + n
  duplicates = duplicates + n - added
  if added > 0 then
    counted = counted + added
    redis.call('HINCRBY', p .. 'slot:' .. sk, field, added)
    redis.call('HINCRBY', p .. 'day:' .. app .. ':' .. day, field, added)
    if redis.call('EXISTS', p .. 'verdict:' .. sk) == 1 then
      late = late + added
      redis.call('HINCRBY', p .. 'slot:' .. sk, 'late_' .. field, added)
      redis.call('SADD', p .. 'dirty', sk)
    elseif redis.call('ZADD', p .. 'open', 'NX', slot, sk) == 1 then
      redis.call('SADD', p .. 'apps', app)
    end
  end
end
redis.call('HSET', p .. 'offsets', tp, max_offset)
local known = tonumber(redis.call('HGET', p .. 'streamtime', tp) or '-1')
if stream_ms > known then
  redis.call('HSET', p .. 'streamtime', tp, stream_ms)
end
if refused > 0 then
  redis.call('HINCRBY', p .. 'deadletters', tp, refused)
end
seq = redis.call('HINCRBY', p .. 'meta', 'seq', 1)
return {1, max_offset, counted, duplicates, late, seq}
""".replace("CHUNK", str(_SADD_CHUNK))
)

_COMMIT_VERDICT = (
    """
local p = ARGV[1]
local app, slot = ARGV[2], ARGV[3]
local expected_revision = tonumber(ARGV[4])
local requests, successes = ARGV[5], ARGV[6]
local unavailable, exempt, data_quality = ARGV[7], ARGV[8], ARGV[9]
local clause, hold_from = ARGV[10], ARGV[11]
local message_key, message_value = ARGV[12], ARGV[13]
local ledger_member = ARGV[14]
local generation, state = ARGV[15], ARGV[16]
local min_seq = tonumber(ARGV[17])
"""
    + _fence(lost="{-3, 0}", other="{-3, 0}", rolled_back="{-6, seq}")
    + """
local sk = app .. ':' .. slot
local vkey = p .. 'verdict:' .. sk
local revision = tonumber(redis.call('HGET', vkey, 'revision') or '0')
if revision ~= expected_revision then
  return {-1, seq}
end
local counts = redis.call('HMGET', p .. 'slot:' .. sk, 'requests', 'successes')
if (counts[1] or '0') ~= requests or (counts[2] or '0') ~= successes then
  return {-2, seq}
end
redis.call('ZREM', p .. 'open', sk)
redis.call('SREM', p .. 'dirty', sk)
redis.call('ZADD', p .. 'idsheld', hold_from, sk)
redis.call('SADD', p .. 'ledgerdue', ledger_member)
if tonumber(slot) > tonumber(redis.call('HGET', p .. 'lastclosed', app) or '-1') then
  redis.call('HSET', p .. 'lastclosed', app, slot)
end
seq = redis.call('HINCRBY', p .. 'meta', 'seq', 1)
if message_value == '' then
  return {revision, seq}
end
revision = revision + 1
redis.call('HSET', vkey, 'revision', revision, 'requests', requests, 'successes', successes,
           'unavailable', unavailable, 'exempt', exempt, 'data_quality', data_quality, 'clause', clause)
if unavailable == '1' then
  redis.call('ZADD', p .. 'unavailable:' .. app, slot, slot)
else
  redis.call('ZREM', p .. 'unavailable:' .. app, slot)
end
if data_quality == '1' then
  redis.call('ZADD', p .. 'dataquality:' .. app, slot, slot)
else
  redis.call('ZREM', p .. 'dataquality:' .. app, slot)
end
redis.call('RPUSH', p .. 'outbox', message_key, message_value)
return {revision, seq}
"""
)


_NEW_GENERATION = """
local meta = redis.call('HMGET', KEYS[1], 'generation', 'state')
if meta[1] ~= ARGV[1] or meta[2] ~= 'live' then
  return 0
end
redis.call('HSET', KEYS[1], 'generation', ARGV[2])
return 1
"""
"""Moves a live namespace to a new generation, unless it was moved (or lost) since the caller looked."""

_INITIALISE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'state', 'live', 'initialised_ms', ARGV[1])
return 1
"""
"""Writes a namespace's marker only if it has none, in one step (two workers may start at once)."""


@dataclass(frozen=True)
class SlotBatch:
    """One slot's new event ids from a partition batch, with the local day the slot lies in."""

    app_id: str
    slot_ms: int
    day: str
    event_ids: Sequence[str]


NamespaceState = Literal["live", "rebuilding"]


@dataclass(frozen=True)
class Fence:
    """The namespace a step is meant for: workers write to a ``live`` one, a rebuild to a ``rebuilding`` one.

    ``generation`` is the time (epoch ms) the namespace was initialised or
    rebuilt; verdict messages carry it, so readers of the compacted topic can
    tell a rebuild's revisions from the ones they replace.
    """

    generation: int
    state: NamespaceState = "live"


@dataclass(frozen=True)
class Meta:
    """The namespace's marker (``meta``): present from initialisation on; gone means the state was lost."""

    generation: int
    state: NamespaceState
    initialised_ms: int

    @property
    def fence(self) -> Fence:
        return Fence(self.generation, self.state)


class ApplyStatus(enum.IntEnum):
    """What ``apply_batch`` did with a partition batch (the script's status code)."""

    APPLIED = 1
    ALREADY_APPLIED = 0
    """Every record was at or below the applied offset: a redelivery, nothing counted."""
    OVERLAP = -1
    """Part of the batch was applied (by another worker, since the caller looked): drop those records and retry."""
    STATE_LOST = -3
    """The namespace has no marker: Redis lost the state; nothing may be counted until it is rebuilt."""
    FENCED = -4
    """The namespace has another generation or state (a rebuild began or ended): read positions again."""
    BEHIND = -5
    """Redis's applied offset is below the one the caller read: Redis lost writes; read the partition again from it."""
    ROLLED_BACK = -6
    """The namespace's step counter is below one this store saw: Redis lost writes (restored from an older state)."""


@dataclass(frozen=True)
class ApplyResult:
    """What one ``apply_batch`` did; ``applied_offset`` is the partition's applied offset Redis holds now."""

    status: ApplyStatus
    applied_offset: int
    counted: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass(frozen=True)
class StoredVerdict:
    """A closed slot's latest verdict as Redis holds it."""

    revision: int
    counts: SlotCounts
    unavailable: bool
    exempt: bool
    data_quality: bool
    clause: str


@dataclass(frozen=True)
class PartitionState:
    """What Redis knows of one input partition, for the stream-time watermark."""

    offset: int | None
    stream_ms: int | None
    idle_seen_ms: int | None


class Store:
    """The live state in Redis under ``prefix``; the only code that knows its key names."""

    def __init__(self, redis: Redis, prefix: str = "sla:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._apply = redis.register_script(_APPLY_BATCH)
        self._commit = redis.register_script(_COMMIT_VERDICT)
        self._initialise = redis.register_script(_INITIALISE)
        self._seen: tuple[int, int] = (0, 0)
        """(generation, step counter): the highest counter this store's steps have seen in that generation."""
        self._new_generation = redis.register_script(_NEW_GENERATION)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(part) for part in parts)

    async def apply_batch(
        self,
        fence: Fence,
        tp: str,
        expected_offset: int,
        offsets: Sequence[int],
        slots: Iterable[SlotBatch],
        field: str,
        stream_ms: int,
        refused: int,
    ) -> ApplyResult:
        """Count one partition's batch, covering records ``min(offsets)..max(offsets)``, atomically.

        ``expected_offset`` is the applied offset (-1: none) the caller's
        reading of the partition continues from. Nothing is counted unless the
        status is ``APPLIED``; see :class:`ApplyStatus` for what each other
        status asks of the caller.
        """
        if field not in COUNT_FIELDS:
            raise ValueError(f"unknown count field {field!r}")
        args: list[object] = [self.prefix, tp, min(offsets), max(offsets), stream_ms, field, refused]
        args += [fence.generation, fence.state, expected_offset, self._min_seq(fence)]
        for batch in slots:
            args += [batch.app_id, batch.slot_ms, batch.day, len(batch.event_ids), *batch.event_ids]
        status, applied_offset, counted, duplicates, late, seq = await self._apply(args=args)
        self._saw(fence, seq)
        return ApplyResult(ApplyStatus(status), int(applied_offset), counted, duplicates, late)

    def _min_seq(self, fence: Fence) -> int:
        generation, seq = self._seen
        return seq if generation == fence.generation else 0

    def _saw(self, fence: Fence, seq: int) -> None:
        """Remember the namespace's step counter: Redis coming back below it means it lost writes."""
        if seq and (fence.generation, seq) > self._seen:
            self._seen = (fence.generation, int(seq))

    async def meta(self) -> Meta | None:
        """The namespace's marker, or None when it has none (never initialised, or lost)."""
        raw = await self.redis.hgetall(self.key("meta"))
        if not raw:
            return None
        return Meta(int(raw["generation"]), raw["state"], int(raw["initialised_ms"]))

    async def initialise(self, generation: int) -> bool:
        """Write the marker of a new, live namespace; False (nothing written) when it has one already."""
        return bool(await self._initialise(keys=[self.key("meta")], args=[generation]))

    async def new_generation(self, fence: Fence, generation: int) -> bool:
        """Move the live namespace of ``fence`` to ``generation``; False if it is not ``fence``'s any more.

        For when Redis lost writes: verdict revisions it had counted up to
        were published and are now forgotten, so revisions published from
        here on must be told apart by a larger generation.
        """
        return bool(await self._new_generation(keys=[self.key("meta")], args=[fence.generation, generation]))

    async def begin_rebuild(self, generation: int) -> int:
        """Mark the namespace as being rebuilt with a new generation, then delete everything else in it.

        The marker goes first, so every worker's step is refused from that
        instant on. Returns how many keys were deleted.
        """
        meta = self.key("meta")
        await self.redis.hset(
            meta, mapping={"generation": generation, "state": "rebuilding", "initialised_ms": generation}
        )
        deleted = 0
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            if key != meta:
                batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.redis.delete(*batch)
                batch = []
        if batch:
            deleted += await self.redis.delete(*batch)
        return deleted

    async def finish_rebuild(self, generation: int) -> bool:
        """Hand a rebuilt namespace to the workers (state ``live``); False if another rebuild took it over."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key("meta"))
            if await pipe.hget(self.key("meta"), "generation") != str(generation):
                return False
            pipe.multi()
            pipe.hset(self.key("meta"), "state", "live")
            await pipe.execute()
        return True

    async def partition_states(self, tps: Iterable[str]) -> dict[str, PartitionState]:
        names = list(tps)
        pipe = self.redis.pipeline(transaction=False)
        for hash_name in ("offsets", "streamtime", "idle"):
            pipe.hmget(self.key(hash_name), names)
        offsets, stream_times, idle = await pipe.execute()
        return {
            tp: PartitionState(_int_or_none(offsets[i]), _int_or_none(stream_times[i]), _int_or_none(idle[i]))
            for i, tp in enumerate(names)
        }

    async def applied_offsets(self, tps: Iterable[str]) -> dict[str, int | None]:
        names = list(tps)
        values = await self.redis.hmget(self.key("offsets"), names) if names else []
        return {tp: _int_or_none(value) for tp, value in zip(names, values, strict=True)}

    async def mark_idle(self, idle: Mapping[str, int], busy: Iterable[str]) -> None:
        """Record which partitions are caught up and quiet (with the wall time seen), and which are not."""
        pipe = self.redis.pipeline(transaction=False)
        if idle:
            pipe.hset(self.key("idle"), mapping=dict(idle))
        busy = list(busy)
        if busy:
            pipe.hdel(self.key("idle"), *busy)
        await pipe.execute()

    async def slots_to_close(self, before_slot_ms: int, limit: int) -> list[tuple[str, int]]:
        """Open slots starting before ``before_slot_ms``, oldest first: ``(app, slot_ms)``."""
        members = await self.redis.zrangebyscore(self.key("open"), "-inf", f"({before_slot_ms}", start=0, num=limit)
        return [_split_slot_key(member) for member in members]

    async def dirty_slots(self, limit: int) -> list[tuple[str, int]]:
        return [_split_slot_key(member) for member in await self.redis.srandmember(self.key("dirty"), limit)]

    async def mark_dirty(self, slots: Iterable[tuple[str, int]]) -> None:
        members = [f"{app}:{slot_ms}" for app, slot_ms in slots]
        if members:
            await self.redis.sadd(self.key("dirty"), *members)

    async def slot_counts(self, slots: Sequence[tuple[str, int]]) -> list[SlotCounts]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hmget(self.key("slot", app, slot_ms), COUNT_FIELDS)
        return [SlotCounts(int(r or 0), int(s or 0)) for r, s in await pipe.execute()]

    async def verdicts(self, slots: Sequence[tuple[str, int]]) -> list[StoredVerdict | None]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hgetall(self.key("verdict", app, slot_ms))
        return [_stored_verdict(raw) if raw else None for raw in await pipe.execute()]

    async def commit_verdict(
        self,
        fence: Fence,
        app_id: str,
        slot_ms: int,
        hold_from_ms: int,
        ledger_month: str,
        expected_revision: int,
        verdict: StoredVerdict | None,
        counts: SlotCounts,
        message: tuple[str, str] | None,
    ) -> int | None:
        """Close (or re-judge) a slot; ``verdict``/``message`` ``None`` means "unchanged, just mark judged".

        The slot's event ids are held for duplicate detection from
        ``hold_from_ms`` (stream time), and its month (``YYYY-MM``) is marked
        for a ledger update in the same step, so a crash cannot lose either.
        Returns the revision now stored, or ``None`` when the slot's counts or
        revision moved since they were read: the caller judges it again later.
        Raises :class:`Fenced` when the namespace is not ``fence``'s.
        """
        key, value = message or ("", "")
        v = verdict
        reply = await self._commit(
            args=[
                self.prefix,
                app_id,
                slot_ms,
                expected_revision,
                counts.requests,
                counts.successes,
                int(bool(v and v.unavailable)),
                int(bool(v and v.exempt)),
                int(bool(v and v.data_quality)),
                v.clause if v else "",
                hold_from_ms,
                key,
                value,
                f"{ledger_month}:{app_id}",
                fence.generation,
                fence.state,
                self._min_seq(fence),
            ]
        )
        result, seq = reply
        if result == -3:
            raise Fenced(f"the namespace {self.prefix!r} is no longer generation {fence.generation} ({fence.state})")
        if result == -6:
            raise RolledBack(f"the namespace {self.prefix!r} holds fewer steps than were made: Redis lost writes")
        self._saw(fence, seq)
        return None if result < 0 else int(result)

    async def ledgers_due(self) -> list[tuple[str, str]]:
        """``(YYYY-MM, app)`` of every month ledger waiting to be recomputed."""
        return sorted(tuple(member.split(":", 1)) for member in await self.redis.smembers(self.key("ledgerdue")))

    async def ledger_done(self, month: str, app_id: str) -> None:
        await self.redis.srem(self.key("ledgerdue"), f"{month}:{app_id}")

    async def release_ids(self, closed_before_ms: int, limit: int = 1000) -> int:
        """Drop the id sets of slots last judged before ``closed_before_ms`` (stream time)."""
        members = await self.redis.zrangebyscore(self.key("idsheld"), "-inf", closed_before_ms, start=0, num=limit)
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        for member in members:
            app, slot_ms = _split_slot_key(member)
            pipe.delete(*(self.key("ids", app, slot_ms, f) for f in COUNT_FIELDS))
        pipe.zrem(self.key("idsheld"), *members)
        await pipe.execute()
        return len(members)

    async def outbox(self, limit: int) -> list[tuple[str, str]]:
        raw = await self.redis.lrange(self.key("outbox"), 0, 2 * limit - 1)
        return [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    async def outbox_done(self, count: int) -> None:
        await self.redis.ltrim(self.key("outbox"), 2 * count, -1)

    async def open_slots(self) -> list[tuple[str, int]]:
        return [_split_slot_key(member) for member in await self.redis.zrange(self.key("open"), 0, -1)]

    async def last_closed_slot(self, app_id: str) -> int | None:
        return _int_or_none(await self.redis.hget(self.key("lastclosed"), app_id))

    async def apps(self) -> set[str]:
        return set(await self.redis.smembers(self.key("apps")))

    async def flagged_slots(self, app_id: str, start_ms: int, end_ms: int) -> dict[int, SlotCounts]:
        """Counts of the app's slots in ``[start_ms, end_ms)`` whose verdict is unavailable or data-quality."""
        pipe = self.redis.pipeline(transaction=False)
        for name in ("unavailable", "dataquality"):
            pipe.zrangebyscore(self.key(name, app_id), start_ms, f"({end_ms}")
        slot_starts = sorted({int(s) for found in await pipe.execute() for s in found})
        counts = await self.slot_counts([(app_id, s) for s in slot_starts])
        return dict(zip(slot_starts, counts, strict=True))

    async def unavailable_slots(self, app_id: str, start_ms: int, end_ms: int) -> list[int]:
        found = await self.redis.zrangebyscore(self.key("unavailable", app_id), start_ms, f"({end_ms}")
        return [int(s) for s in found]

    async def day_totals(self, app_id: str, days: Sequence[str]) -> SlotCounts:
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hmget(self.key("day", app_id, day), COUNT_FIELDS)
        rows = await pipe.execute()
        return SlotCounts(sum(int(r or 0) for r, _ in rows), sum(int(s or 0) for _, s in rows))

    async def exemptions(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in (await self.redis.hgetall(self.key("exemptions"))).items()}

    async def put_exemption(self, exemption_id: str, record: Mapping[str, Any] | None) -> None:
        if record is None:
            await self.redis.hdel(self.key("exemptions"), exemption_id)
        else:
            await self.redis.hset(self.key("exemptions"), exemption_id, json.dumps(record))

    async def save_month(self, app_id: str, first_day: str, figures: Mapping[str, Any]) -> None:
        await self.redis.set(self.key("month", app_id, first_day), json.dumps(figures))

    async def month(self, app_id: str, first_day: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.key("month", app_id, first_day))
        return None if raw is None else json.loads(raw)


class Fenced(Exception):
    """A step was refused: the namespace lost its marker, or has another generation or state."""


class RolledBack(Exception):
    """A step was refused: Redis holds fewer of the namespace's steps than this store saw made (it lost writes)."""


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


def _split_slot_key(member: str) -> tuple[str, int]:
    app, _, slot = member.rpartition(":")
    return app, int(slot)


def _stored_verdict(raw: Mapping[str, str]) -> StoredVerdict:
    return StoredVerdict(
        revision=int(raw["revision"]),
        counts=SlotCounts(int(raw["requests"]), int(raw["successes"])),
        unavailable=raw["unavailable"] == "1",
        exempt=raw["exempt"] == "1",
        data_quality=raw["data_quality"] == "1",
        clause=raw.get("clause", ""),
    )
