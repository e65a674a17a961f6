"""The Redis layout of the live state, and the atomic steps that change it.

Redis is the one source of truth of the stream (docs/design.md, invariants). Every
change that must be exact is one Lua script, so it happens entirely or not at
all, whatever happens to the worker that sent it:

``apply_batch``
    counts one partition's batch into slots and records that partition's last
    applied offset, stream time and the minutes its events happened in
    (coverage: no figure without data) in the same step; a batch at or below the
    recorded offset is skipped, so Kafka's redelivery after a crash counts
    nothing twice (invariant 1). Duplicate ``event_id``\\ s within a slot count
    once (a set of ids per slot). The caller says which applied offset it
    read from (``expected``): Redis being *behind* it means Redis lost writes
    (a restore, a lagging replica), and the batch is refused so the partition
    can be read again from Redis's offset, not counted across a gap.
``commit_verdicts``
    stores each slot's verdict of a batch with the next revision only if the
    slot's counts and revision are still those the verdict was computed from,
    and queues it in the outbox for the verdicts topic; a slot therefore
    closes once and a late event that arrives meanwhile is never lost
    (invariant 3). One step per batch of slots, not per slot.

Both steps are fenced by the namespace's **generation** (``meta``): a
namespace is initialised with one, and a rebuild gives it a new one. A step
sent with another generation, or to a namespace whose ``meta`` is gone (Redis
restarted empty, keys flushed), changes nothing and says so, so a worker never
counts into a state that lost its past (:mod:`stream.live.namespace`).

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
``ledgerversion``              STRING counter: the version the last saved month ledger was stamped with
``ledgerchanged``              ZSET ``app:first day`` → version its ledger was last saved with
``lock:closer``                STRING the closer's lease (a Redis lock), held while a tick runs
``calls:{app}``                HASH requests, successes ever counted (the metrics' call counters)
``outcomes:{app}``             HASH good, bad, exempt: slots by their first verdict; failed_calls in them
``coverage:{tp}:{YYYY-MM}``    STRING bitmap, one bit a minute of the calendar month: an event of the partition
                               had its time in it (:class:`stream.sla.coverage.MinuteMap`)
=============================  =========================================================

:class:`Keys` spells these names; nothing else builds them (the Lua scripts
excepted, which build them from the prefix inside Redis).

The scripts build key names from their arguments, so this layout needs a
single Redis server (or one hash slot), not a cluster.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.formats import exemption_from_json
from stream.live.clock import PartitionState
from stream.live.hiredis_packing import use_hiredis_packing
from stream.sla.coverage import MinuteMap
from stream.sla.exemptions import Exemption
from stream.sla.judge import JudgedSlot
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
local minutes = tonumber(ARGV[12])
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
for m = 13, 12 + 2 * minutes, 2 do
  redis.call('SETBIT', p .. 'coverage:' .. tp .. ':' .. ARGV[m], ARGV[m + 1], 1)
end
local counted, duplicates, late = 0, 0, 0
local i = 13 + 2 * minutes
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
    redis.call('HINCRBY', p .. 'calls:' .. app, field, added)
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

_COMMIT_FIELDS = 13
"""Arguments per slot in ``_COMMIT_VERDICTS`` (after the five common ones): see :meth:`VerdictCommit.args`."""

COMMIT_BATCH = 500
"""Slots per ``commit_verdicts`` step: one round trip each, short enough not to hold Redis up."""

_COMMIT_VERDICTS = (
    """
local p = ARGV[1]
local generation, state = ARGV[2], ARGV[3]
local min_seq = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
"""
    + _fence(lost="{-3, 0}", other="{-3, 0}", rolled_back="{-6, seq}")
    + """
local results = {}
local changed = false
for i = 0, n - 1 do
  local a = 5 + i * FIELDS
  local app, slot = ARGV[a + 1], ARGV[a + 2]
  local expected_revision = tonumber(ARGV[a + 3])
  local requests, successes = ARGV[a + 4], ARGV[a + 5]
  local unavailable, exempt, data_quality, clause = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
  local hold_from, message_key, message_value = ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
  local sk = app .. ':' .. slot
  local vkey = p .. 'verdict:' .. sk
  local revision = tonumber(redis.call('HGET', vkey, 'revision') or '0')
  local counts = redis.call('HMGET', p .. 'slot:' .. sk, 'requests', 'successes')
  if revision ~= expected_revision then
    results[#results + 1] = -1
  elseif (counts[1] or '0') ~= requests or (counts[2] or '0') ~= successes then
    results[#results + 1] = -2
  else
    changed = true
    redis.call('ZREM', p .. 'open', sk)
    redis.call('SREM', p .. 'dirty', sk)
    redis.call('ZADD', p .. 'idsheld', hold_from, sk)
    redis.call('SADD', p .. 'ledgerdue', ARGV[a + 13])
    if tonumber(slot) > tonumber(redis.call('HGET', p .. 'lastclosed', app) or '-1') then
      redis.call('HSET', p .. 'lastclosed', app, slot)
    end
    if message_value ~= '' then
      if revision == 0 then
        local outcome = 'good'
        if unavailable == '1' then
          outcome = exempt == '1' and 'exempt' or 'bad'
        end
        local failed = math.max(0, tonumber(requests) - tonumber(successes))
        redis.call('HINCRBY', p .. 'outcomes:' .. app, outcome, 1)
        redis.call('HINCRBY', p .. 'outcomes:' .. app, 'failed_calls', failed)
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
    end
    results[#results + 1] = revision
  end
end
if changed then
  seq = redis.call('HINCRBY', p .. 'meta', 'seq', 1)
end
return {0, seq, results}
"""
).replace("FIELDS", str(_COMMIT_FIELDS))


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

_SAVE_MONTH = """
redis.call('SET', KEYS[1], ARGV[1])
local version = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], version, ARGV[2])
return version
"""
"""Saves a month ledger and stamps it with the next ledger version, in one step: a reader that saw version V
re-reads exactly the ledgers saved after it (:meth:`Store.months_changed`)."""

_APP_COUNTERS = """
local p = ARGV[1]
local flat = {}
for i = 2, #ARGV do
  local calls = redis.call('HMGET', p .. 'calls:' .. ARGV[i], 'requests', 'successes')
  local outcomes = redis.call('HMGET', p .. 'outcomes:' .. ARGV[i], 'good', 'bad', 'exempt', 'failed_calls')
  for _, value in ipairs({calls[1], calls[2], outcomes[1], outcomes[2], outcomes[3], outcomes[4]}) do
    flat[#flat + 1] = tonumber(value or 0) or 0
  end
end
return flat
"""
"""Every given app's six counters (:class:`AppCounters`' order), flat, in one reply."""

_COUNTERS_CHUNK = 1000
"""Apps per ``_APP_COUNTERS`` call: its ARGV stays well under Lua's ``unpack`` limit, and Redis is not held long."""


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

    @classmethod
    def of(cls, judged: JudgedSlot) -> StoredVerdict:
        """What Redis keeps of a judged slot (revision 0 until the store assigns one)."""
        return cls(
            revision=0,
            counts=judged.verdict.counts,
            unavailable=judged.verdict.unavailable,
            exempt=judged.exempt,
            data_quality=judged.verdict.data_quality_issue,
            clause=judged.exemption.clause if judged.exemption else "",
        )

    def says_the_same(self, other: StoredVerdict) -> bool:
        """Whether ``other`` would say nothing new as the next revision: same verdict, same counts."""
        return (self.counts, self.unavailable, self.exempt, self.data_quality, self.clause) == (
            other.counts,
            other.unavailable,
            other.exempt,
            other.data_quality,
            other.clause,
        )


@dataclass(frozen=True)
class AppCounters:
    """An app's counters in Redis: they only grow (a rebuild starts them again, under a new generation).

    Slots are counted by their first verdict (revision 1): a slot later
    exempted, or changed by a late event, stays where it was first counted;
    the month's figures (availability, budget) follow every revision instead.
    ``failed_calls`` are the requests without a success in those slots at
    their first verdict.
    """

    requests: int
    successes: int
    good_slots: int
    bad_slots: int
    exempt_slots: int
    failed_calls: int


@dataclass(frozen=True, order=True)
class LedgerDue:
    """A month ledger to recompute: the app's service months in calendar month ``year-month``."""

    year: int
    month: int
    app_id: str

    @property
    def member(self) -> str:
        """How the ``ledgerdue`` set holds it: ``YYYY-MM:app``."""
        return f"{self.year:04d}-{self.month:02d}:{self.app_id}"

    @classmethod
    def parse(cls, member: str) -> LedgerDue:
        month, _, app_id = member.partition(":")
        year, number = month.split("-")
        return cls(int(year), int(number), app_id)


@dataclass(frozen=True)
class VerdictCommit:
    """One slot's part of :meth:`Store.commit_verdicts`: the counts it was judged on and what to store.

    ``verdict`` and ``message`` are None when the verdict is unchanged: the
    slot is only marked judged (closed, ids held, ledger due).
    """

    app_id: str
    slot_ms: int
    counts: SlotCounts
    expected_revision: int
    verdict: StoredVerdict | None
    message: tuple[str, str] | None
    ledger: LedgerDue
    hold_from_ms: int
    """Stream time from which the slot's event ids are held for duplicate detection."""

    def args(self) -> list[object]:
        """The slot's :data:`_COMMIT_FIELDS` script arguments."""
        v = self.verdict
        key, value = self.message or ("", "")
        return [
            self.app_id,
            self.slot_ms,
            self.expected_revision,
            self.counts.requests,
            self.counts.successes,
            int(bool(v and v.unavailable)),
            int(bool(v and v.exempt)),
            int(bool(v and v.data_quality)),
            v.clause if v else "",
            self.hold_from_ms,
            key,
            value,
            self.ledger.member,
        ]


class Keys:
    """The key names of one namespace (the table above), for the store and for tests that read Redis.

    Example:
        >>> keys = Keys("sla:")
        >>> keys.offsets, keys.slot("1400000001", 1552183200000), keys.closer_lease
        ('sla:offsets', 'sla:slot:1400000001:1552183200000', 'sla:lock:closer')
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _name(self, *parts: object) -> str:
        return self.prefix + ":".join(str(part) for part in parts)

    meta = property(lambda self: self._name("meta"))
    offsets = property(lambda self: self._name("offsets"))
    streamtime = property(lambda self: self._name("streamtime"))
    idle = property(lambda self: self._name("idle"))
    deadletters = property(lambda self: self._name("deadletters"))
    apps = property(lambda self: self._name("apps"))
    open = property(lambda self: self._name("open"))
    dirty = property(lambda self: self._name("dirty"))
    idsheld = property(lambda self: self._name("idsheld"))
    ledgerdue = property(lambda self: self._name("ledgerdue"))
    lastclosed = property(lambda self: self._name("lastclosed"))
    ledgerversion = property(lambda self: self._name("ledgerversion"))
    ledgerchanged = property(lambda self: self._name("ledgerchanged"))
    outbox = property(lambda self: self._name("outbox"))
    exemptions = property(lambda self: self._name("exemptions"))
    closer_lease = property(lambda self: self._name("lock", "closer"))

    def slot(self, app_id: str, slot_ms: int) -> str:
        return self._name("slot", app_id, slot_ms)

    def ids(self, app_id: str, slot_ms: int, field: str) -> str:
        return self._name("ids", app_id, slot_ms, field)

    def day(self, app_id: str, day: str) -> str:
        return self._name("day", app_id, day)

    def verdict(self, app_id: str, slot_ms: int) -> str:
        return self._name("verdict", app_id, slot_ms)

    def unavailable(self, app_id: str) -> str:
        return self._name("unavailable", app_id)

    def dataquality(self, app_id: str) -> str:
        return self._name("dataquality", app_id)

    def month(self, app_id: str, first_day: date) -> str:
        return self._name("month", app_id, first_day.isoformat())

    def calls(self, app_id: str) -> str:
        return self._name("calls", app_id)

    def outcomes(self, app_id: str) -> str:
        return self._name("outcomes", app_id)

    def coverage(self, tp: str, month: str) -> str:
        return self._name("coverage", tp, month)

    def pattern(self, kind: str) -> str:
        """A SCAN pattern for every key of a per-slot ``kind`` (``slot``, ``verdict``)."""
        return _glob_escape(self._name(kind)) + ":*"

    def slot_of(self, key: str, kind: str) -> tuple[str, int]:
        """``(app, slot_ms)`` of a per-slot key of ``kind``."""
        return split_slot_member(key[len(self._name(kind)) + 1 :])


class Store:
    """The live state in Redis under ``prefix``; the only code that knows its key names."""

    def __init__(self, redis: Redis, prefix: str = "sla:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._apply = redis.register_script(_APPLY_BATCH)
        self._commit = redis.register_script(_COMMIT_VERDICTS)
        self._initialise = redis.register_script(_INITIALISE)
        self._seen: tuple[int, int] = (0, 0)
        """(generation, step counter): the highest counter this store's steps have seen in that generation."""
        self._new_generation = redis.register_script(_NEW_GENERATION)
        self._save_month = redis.register_script(_SAVE_MONTH)
        self._app_counters = redis.register_script(_APP_COUNTERS)

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
        covered: Sequence[tuple[str, int]] = (),
    ) -> ApplyResult:
        """Count one partition's batch, covering records ``min(offsets)..max(offsets)``, atomically.

        ``expected_offset`` is the applied offset (-1: none) the caller's
        reading of the partition continues from. ``covered`` are the minutes
        its valid events happened in, as ``(YYYY-MM, bit)`` of the calendar
        month's coverage map (:class:`stream.sla.coverage.MonthBits`). Nothing is counted unless the
        status is ``APPLIED``; see :class:`ApplyStatus` for what each other
        status asks of the caller.
        """
        if field not in COUNT_FIELDS:
            raise ValueError(f"unknown count field {field!r}")
        args: list[object] = [self.prefix, tp, min(offsets), max(offsets), stream_ms, field, refused]
        args += [fence.generation, fence.state, expected_offset, self._min_seq(fence), len(covered)]
        for label, bit in covered:
            args += [label, bit]
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
        raw = await self.redis.hgetall(self.keys.meta)
        if not raw:
            return None
        return Meta(int(raw["generation"]), raw["state"], int(raw["initialised_ms"]))

    async def initialise(self, generation: int) -> bool:
        """Write the marker of a new, live namespace; False (nothing written) when it has one already."""
        return bool(await self._initialise(keys=[self.keys.meta], args=[generation]))

    async def new_generation(self, fence: Fence, generation: int) -> bool:
        """Move the live namespace of ``fence`` to ``generation``; False if it is not ``fence``'s any more.

        For when Redis lost writes: verdict revisions it had counted up to
        were published and are now forgotten, so revisions published from
        here on must be told apart by a larger generation.
        """
        return bool(await self._new_generation(keys=[self.keys.meta], args=[fence.generation, generation]))

    async def begin_rebuild(self, generation: int) -> int:
        """Mark the namespace as being rebuilt with a new generation, then delete everything else in it.

        The marker goes first, so every worker's step is refused from that
        instant on. Returns how many keys were deleted.
        """
        meta = self.keys.meta
        await self.redis.hset(
            meta, mapping={"generation": generation, "state": "rebuilding", "initialised_ms": generation}
        )
        return await self.remove_all(keep=meta)

    async def remove_all(self, keep: str | None = None) -> int:
        """Delete every key of the namespace (but ``keep``); how many were deleted."""
        deleted = 0
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            if key != keep:
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
            await pipe.watch(self.keys.meta)
            if await pipe.hget(self.keys.meta, "generation") != str(generation):
                return False
            pipe.multi()
            pipe.hset(self.keys.meta, "state", "live")
            await pipe.execute()
        return True

    async def partition_states(self, tps: Iterable[str]) -> dict[str, PartitionState]:
        names = list(tps)
        pipe = self.redis.pipeline(transaction=False)
        for hash_name in (self.keys.offsets, self.keys.streamtime, self.keys.idle):
            pipe.hmget(hash_name, names)
        offsets, stream_times, idle = await pipe.execute()
        return {
            tp: PartitionState(_int_or_none(offsets[i]), _int_or_none(stream_times[i]), _int_or_none(idle[i]))
            for i, tp in enumerate(names)
        }

    async def least_stream_time(self) -> int | None:
        """The least stream time of the partitions that have one (None: none has): read up to it by all of them."""
        times = await self.redis.hvals(self.keys.streamtime)
        return min((int(t) for t in times), default=None)

    async def applied_offsets(self, tps: Iterable[str]) -> dict[str, int | None]:
        names = list(tps)
        values = await self.redis.hmget(self.keys.offsets, names) if names else []
        return {tp: _int_or_none(value) for tp, value in zip(names, values, strict=True)}

    async def coverage(self, month: str, start_ms: int, end_ms: int) -> MinuteMap:
        """The minutes of calendar month ``month`` (``YYYY-MM``, spanning ``[start_ms, end_ms)``) in which any
        partition's events happened: every partition's map OR-ed (one round trip for the names, one for the maps)."""
        covered = MinuteMap(start_ms, end_ms)
        tps = await self.redis.hkeys(self.keys.offsets)
        if not tps:
            return covered
        pipe = self.redis.pipeline(transaction=False)
        for tp in tps:
            pipe.execute_command("GET", self.keys.coverage(tp, month), **{NEVER_DECODE: True})
        for bits in await pipe.execute():
            if bits:
                covered.merge(MinuteMap(start_ms, end_ms, bits))
        return covered

    async def mark_idle(self, idle: Mapping[str, int], busy: Iterable[str]) -> None:
        """Record which partitions are caught up and quiet (with the wall time seen), and which are not."""
        pipe = self.redis.pipeline(transaction=False)
        if idle:
            pipe.hset(self.keys.idle, mapping=dict(idle))
        busy = list(busy)
        if busy:
            pipe.hdel(self.keys.idle, *busy)
        await pipe.execute()

    async def slots_to_close(self, before_slot_ms: int, limit: int) -> list[tuple[str, int]]:
        """Open slots starting before ``before_slot_ms``, oldest first: ``(app, slot_ms)``."""
        members = await self.redis.zrangebyscore(self.keys.open, "-inf", f"({before_slot_ms}", start=0, num=limit)
        return [split_slot_member(member) for member in members]

    async def dirty_slots(self, limit: int) -> list[tuple[str, int]]:
        return [split_slot_member(member) for member in await self.redis.srandmember(self.keys.dirty, limit)]

    async def mark_dirty(self, slots: Iterable[tuple[str, int]]) -> None:
        members = [f"{app}:{slot_ms}" for app, slot_ms in slots]
        if members:
            await self.redis.sadd(self.keys.dirty, *members)

    async def slot_counts(self, slots: Sequence[tuple[str, int]]) -> list[SlotCounts]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hmget(self.keys.slot(app, slot_ms), COUNT_FIELDS)
        return [SlotCounts(int(r or 0), int(s or 0)) for r, s in await pipe.execute()]

    async def slot_listing(self, app_id: str, slot_starts: Sequence[int]) -> dict[int, tuple[SlotCounts, int | None]]:
        """The counts and latest verdict revision (None: not closed) of each of the app's slots with traffic.

        One round trip for a month's 8,928 slots, read by their key names (no
        SCAN) in one transaction, so a batch counted meanwhile is in it whole or
        not at all; slots without traffic are absent from the result.
        """
        pipe = self.redis.pipeline(transaction=True)
        for slot_ms in slot_starts:
            pipe.hmget(self.keys.slot(app_id, slot_ms), COUNT_FIELDS)
            pipe.hget(self.keys.verdict(app_id, slot_ms), "revision")
        replies = await pipe.execute()
        listing = {}
        for i, slot_ms in enumerate(slot_starts):
            (requests, successes), revision = replies[2 * i], replies[2 * i + 1]
            if requests or successes:
                listing[slot_ms] = (SlotCounts(int(requests or 0), int(successes or 0)), _int_or_none(revision))
        return listing

    async def verdicts(self, slots: Sequence[tuple[str, int]]) -> list[StoredVerdict | None]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hgetall(self.keys.verdict(app, slot_ms))
        return [_stored_verdict(raw) if raw else None for raw in await pipe.execute()]

    async def commit_verdicts(self, fence: Fence, commits: Sequence[VerdictCommit]) -> list[int | None]:
        """Close (or re-judge) slots, :data:`COMMIT_BATCH` to a Redis step; one revision (or None) per commit.

        Each slot is committed only if its counts and revision are still those
        its verdict was computed from; it is then taken out of ``open`` and
        ``dirty``, its event ids are held for duplicate detection from
        ``hold_from_ms`` (stream time), and its month is marked for a ledger
        update, all in the same step, so a crash cannot lose one of them. The
        result is the revision now stored, or None for a slot whose counts or
        revision moved since they were read: the caller judges it again later.
        Raises :class:`Fenced` (or :class:`RolledBack`) when the namespace is
        not ``fence``'s: nothing of that batch was committed.
        """
        revisions: list[int | None] = []
        for start in range(0, len(commits), COMMIT_BATCH):
            batch = commits[start : start + COMMIT_BATCH]
            args: list[object] = [self.prefix, fence.generation, fence.state, self._min_seq(fence), len(batch)]
            for commit in batch:
                args += commit.args()
            reply = await self._commit(args=args)
            status, seq = reply[0], reply[1]
            if status == -3:
                raise Fenced(
                    f"the namespace {self.prefix!r} is no longer generation {fence.generation} ({fence.state})"
                )
            if status == -6:
                raise RolledBack(f"the namespace {self.prefix!r} holds fewer steps than were made: Redis lost writes")
            self._saw(fence, seq)
            revisions += [None if result < 0 else int(result) for result in reply[2]]
        return revisions

    async def ledgers_due(self) -> list[LedgerDue]:
        """Every month ledger waiting to be recomputed, by month then app."""
        return sorted(LedgerDue.parse(member) for member in await self.redis.smembers(self.keys.ledgerdue))

    async def ledger_done(self, ledger: LedgerDue) -> None:
        await self.redis.srem(self.keys.ledgerdue, ledger.member)

    async def release_ids(self, closed_before_ms: int, limit: int = 1000) -> int:
        """Drop the id sets of slots last judged before ``closed_before_ms`` (stream time)."""
        members = await self.redis.zrangebyscore(self.keys.idsheld, "-inf", closed_before_ms, start=0, num=limit)
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        for member in members:
            app, slot_ms = split_slot_member(member)
            pipe.delete(*(self.keys.ids(app, slot_ms, f) for f in COUNT_FIELDS))
        pipe.zrem(self.keys.idsheld, *members)
        await pipe.execute()
        return len(members)

    async def outbox(self, limit: int) -> list[tuple[str, str]]:
        raw = await self.redis.lrange(self.keys.outbox, 0, 2 * limit - 1)
        return [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    async def outbox_done(self, count: int) -> None:
        await self.redis.ltrim(self.keys.outbox, 2 * count, -1)

    async def open_slots(self) -> list[tuple[str, int]]:
        return [split_slot_member(member) for member in await self.redis.zrange(self.keys.open, 0, -1)]

    async def newest_open_slots(self) -> dict[str, int]:
        """Each app's newest open slot start (apps with none open are absent)."""
        newest: dict[str, int] = {}
        for app_id, slot_ms in await self.open_slots():
            newest[app_id] = max(slot_ms, newest.get(app_id, slot_ms))
        return newest

    async def last_closed_slot(self, app_id: str) -> int | None:
        return _int_or_none(await self.redis.hget(self.keys.lastclosed, app_id))

    async def apps(self) -> set[str]:
        return set(await self.redis.smembers(self.keys.apps))

    async def knows_app(self, app_id: str) -> bool:
        """Whether the app has had an event counted."""
        return bool(await self.redis.sismember(self.keys.apps, app_id))

    async def flagged_slots(self, app_id: str, start_ms: int, end_ms: int) -> dict[int, SlotCounts]:
        """Counts of the app's slots in ``[start_ms, end_ms)`` whose verdict is unavailable or data-quality."""
        pipe = self.redis.pipeline(transaction=False)
        for zset in (self.keys.unavailable(app_id), self.keys.dataquality(app_id)):
            pipe.zrangebyscore(zset, start_ms, f"({end_ms}")
        slot_starts = sorted({int(s) for found in await pipe.execute() for s in found})
        counts = await self.slot_counts([(app_id, s) for s in slot_starts])
        return dict(zip(slot_starts, counts, strict=True))

    async def unavailable_slots(self, app_id: str, start_ms: int, end_ms: int) -> list[int]:
        found = await self.redis.zrangebyscore(self.keys.unavailable(app_id), start_ms, f"({end_ms}")
        return [int(s) for s in found]

    async def day_totals(self, app_id: str, days: Sequence[str]) -> SlotCounts:
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hmget(self.keys.day(app_id, day), COUNT_FIELDS)
        rows = await pipe.execute()
        return SlotCounts(sum(int(r or 0) for r, _ in rows), sum(int(s or 0) for _, s in rows))

    async def exemption(self, exemption_id: str) -> Exemption | None:
        """The exemption recorded from the topic under ``exemption_id``, if any."""
        raw = await self.redis.hget(self.keys.exemptions, exemption_id)
        return None if raw is None else exemption_from_json(json.loads(raw))

    async def exemptions(self) -> dict[str, Exemption]:
        """The exemptions recorded from the topic, by exemption id (validated before they were stored)."""
        raw = await self.redis.hgetall(self.keys.exemptions)
        return {key: exemption_from_json(json.loads(value)) for key, value in raw.items()}

    async def put_exemption(self, exemption_id: str, record: Mapping[str, Any] | None) -> Exemption | None:
        """Record an exemption's JSON object (from :func:`stream.formats.decode_exemption`), or withdraw it (None)."""
        if record is None:
            await self.redis.hdel(self.keys.exemptions, exemption_id)
            return None
        exemption = exemption_from_json(record)
        await self.redis.hset(self.keys.exemptions, exemption_id, json.dumps(record))
        return exemption

    async def save_month(self, app_id: str, first_day: date, figures: Mapping[str, Any]) -> None:
        """Save the month ledger, stamped with the next ledger version."""
        keys = [self.keys.month(app_id, first_day), self.keys.ledgerversion, self.keys.ledgerchanged]
        await self._save_month(keys=keys, args=[json.dumps(figures), f"{app_id}:{first_day.isoformat()}"])

    async def months_changed(self, after: int) -> tuple[int, list[tuple[str, date]]]:
        """The ledger version now, and the ``(app, first day)`` of every ledger saved after version ``after``.

        A version below ``after`` means the namespace was rebuilt or Redis lost writes: read every ledger again.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.keys.ledgerversion)
        pipe.zrangebyscore(self.keys.ledgerchanged, f"({after}", "+inf")
        version, members = await pipe.execute()
        changed = []
        for member in members:
            app_id, _, day = member.rpartition(":")
            changed.append((app_id, date.fromisoformat(day)))
        return int(version or 0), changed

    async def months(self, wanted: Sequence[tuple[str, date]]) -> list[dict[str, Any] | None]:
        """The month ledgers of ``(app, first day)`` pairs, in one round trip (None: none saved)."""
        if not wanted:
            return []
        raw = await self.redis.mget([self.keys.month(app_id, day) for app_id, day in wanted])
        return [None if value is None else json.loads(value) for value in raw]

    async def month(self, app_id: str, first_day: date) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.month(app_id, first_day))
        return None if raw is None else json.loads(raw)

    async def app_counters(self, app_ids: Sequence[str]) -> dict[str, AppCounters]:
        """Each app's counters since its state began: calls counted, and slots by their first verdict.

        One script call returns them all as one flat array of numbers, in
        chunks of :data:`_COUNTERS_CHUNK` apps: a reply a chunk, not two an app
        (10,000 apps: 20,000 replies to parse every refresh otherwise).
        """
        counters = {}
        for start in range(0, len(app_ids), _COUNTERS_CHUNK):
            chunk = list(app_ids[start : start + _COUNTERS_CHUNK])
            flat = [int(n) for n in await self._app_counters(args=[self.prefix, *chunk])]
            for i, app_id in enumerate(chunk):
                counters[app_id] = AppCounters(*flat[6 * i : 6 * i + 6])
        return counters

    def closer_lease(self, timeout_s: float) -> Lock:
        """The closer's lease: one closer tick at a time, whichever worker leads (not acquired yet)."""
        return self.redis.lock(self.keys.closer_lease, timeout=timeout_s)


def redis_client(url: str, socket_timeout_s: float = 10.0) -> Redis:
    """A worker's Redis client: bounded connect and call times, so an outage is noticed and waited out.

    A call that has not answered in ``socket_timeout_s`` fails (and is
    retried by the caller): nothing waits forever on a dead socket. A call
    that fails on a connection is retried twice on a fresh one first: after
    Redis restarts, every pooled connection fails once, and that is not an
    outage. (A retried script is safe: the offset fence and the verdict's
    compare-and-set make a repeat a no-op.) Commands are packed by hiredis
    (:mod:`stream.live.hiredis_packing`).
    """
    client = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout_s,
        health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return use_hiredis_packing(client)


class Fenced(Exception):
    """A step was refused: the namespace lost its marker, or has another generation or state."""


class RolledBack(Exception):
    """A step was refused: Redis holds fewer of the namespace's steps than this store saw made (it lost writes)."""


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


def split_slot_member(member: str) -> tuple[str, int]:
    """``app:slot_ms`` (members of ``open``, ``dirty``, ``idsheld``) as ``(app, slot_ms)``."""
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
