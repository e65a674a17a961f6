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
``meta``                       HASH generation, state (``live``/``rebuilding``), initialised_ms, seq (steps made),
                               changes (steps that counted an event or stored a verdict: what views follow)
``offsets``, ``streamtime``    HASH ``topic:partition`` → last applied offset, max event ts
``idle``                       HASH ``topic:partition`` → wall ms it was last seen caught up and idle
``deadletters``                HASH ``topic:partition`` → records refused
``apps``                       SET of app ids seen
``slot:{app}:{slot}``          HASH requests, successes, late_requests, late_successes
``ids:{app}:{slot}:{field}``   SET of event ids counted (dropped ``dedup_hold`` after the slot closes)
``days:{app}:{YYYY-MM}``       HASH requests, successes of a calendar month, and ``DD:requests``, ``DD:successes``
                               of each of its local days
``slots:{app}:{YYYY-MM}``      SET starts of the app's slots with traffic in a calendar month (what a statement lists)
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

The table is one **shard**'s. The state is split by app into ``[redis] shards``
shards (:mod:`stream.live.shards`), each under a prefix with a hash tag of its
own, so on a Redis Cluster all of a shard's keys are in one hash slot and every
step runs on one node. Each script gets the shard's ``meta`` as ``KEYS[1]``,
which routes it; the names it builds from the shard prefix hash to the same
slot, which is all a cluster node accepts. :class:`Store` hides the shards:
an app's reads go to its shard, a partition batch becomes one step per shard
(docs/design.md, "Shards").
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.formats import exemption_from_json
from stream.live.clock import PartitionState
from stream.live.hiredis_packing import use_hiredis_packing
from stream.live.shards import in_some_shard, shard_of, shard_prefixes
from stream.sla.coverage import MinuteMap
from stream.sla.exemptions import Exemption
from stream.sla.judge import JudgedSlot
from stream.sla.verdict import SlotCounts

if TYPE_CHECKING:
    from stream.config import Settings

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
    local month = app .. ':' .. string.sub(day, 1, 7)
    redis.call('HINCRBY', p .. 'days:' .. month, string.sub(day, 9) .. ':' .. field, added)
    redis.call('HINCRBY', p .. 'days:' .. month, field, added)
    redis.call('HINCRBY', p .. 'calls:' .. app, field, added)
    if redis.call('EXISTS', p .. 'verdict:' .. sk) == 1 then
      late = late + added
      redis.call('HINCRBY', p .. 'slot:' .. sk, 'late_' .. field, added)
      redis.call('SADD', p .. 'dirty', sk)
    elseif redis.call('ZADD', p .. 'open', 'NX', slot, sk) == 1 then
      redis.call('SADD', p .. 'apps', app)
      redis.call('SADD', p .. 'slots:' .. month, slot)
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
if counted > 0 then
  redis.call('HINCRBY', p .. 'meta', 'changes', 1)
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
      local revised = revision > 0  -- a first verdict has no flag to take back
      revision = revision + 1
      redis.call('HSET', vkey, 'revision', revision, 'requests', requests, 'successes', successes,
                 'unavailable', unavailable, 'exempt', exempt, 'data_quality', data_quality, 'clause', clause)
      if unavailable == '1' then
        redis.call('ZADD', p .. 'unavailable:' .. app, slot, slot)
      elseif revised then
        redis.call('ZREM', p .. 'unavailable:' .. app, slot)
      end
      if data_quality == '1' then
        redis.call('ZADD', p .. 'dataquality:' .. app, slot, slot)
      elseif revised then
        redis.call('ZREM', p .. 'dataquality:' .. app, slot)
      end
      redis.call('RPUSH', p .. 'outbox', message_key, message_value)
    end
    results[#results + 1] = revision
  end
end
if changed then
  redis.call('HINCRBY', p .. 'meta', 'changes', 1)
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

_FINISH_REBUILD = """
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'live')
return 1
"""
"""Hands a shard rebuilt as generation ARGV[1] to the workers, unless another rebuild took it over."""

_SAVE_MONTHS = """
local p = ARGV[1]
local version = redis.call('INCR', p .. 'ledgerversion')
for i = 2, #ARGV, 2 do
  redis.call('SET', p .. 'month:' .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', p .. 'ledgerchanged', version, ARGV[i])
end
return version
"""
"""Saves month ledgers (``app:first day``, JSON pairs) stamped with the next ledger version, in one step: a reader
that saw version V re-reads exactly the ledgers saved after it (:meth:`Store.months_changed`)."""

_SAVE_CHUNK = 500
"""Month ledgers per ``_SAVE_MONTHS`` step (some 1 to 2 kB each)."""

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

_MONTH_INPUTS = """
local p = ARGV[1]
local flat = {}
local i = 2
while i <= #ARGV do
  local app, first, after, days = ARGV[i], ARGV[i + 1], '(' .. ARGV[i + 2], tonumber(ARGV[i + 3])
  local fields = {'requests', 'successes'}
  if days > 0 then
    fields = {}
    for d = i + 4, i + 3 + days do
      fields[#fields + 1] = ARGV[d] .. ':requests'
      fields[#fields + 1] = ARGV[d] .. ':successes'
    end
  end
  local totals = redis.call('HMGET', p .. 'days:' .. app .. ':' .. ARGV[i + 4 + days], unpack(fields))
  local requests, successes = 0, 0
  for f = 1, #totals, 2 do
    requests = requests + tonumber(totals[f] or '0')
    successes = successes + tonumber(totals[f + 1] or '0')
  end
  i = i + 5 + days
  local flagged, seen = {}, {}
  for _, kind in ipairs({'unavailable:', 'dataquality:'}) do
    for _, slot in ipairs(redis.call('ZRANGEBYSCORE', p .. kind .. app, first, after)) do
      if not seen[slot] then
        seen[slot] = true
        flagged[#flagged + 1] = slot
      end
    end
  end
  flat[#flat + 1] = requests
  flat[#flat + 1] = successes
  flat[#flat + 1] = #flagged
  for _, slot in ipairs(flagged) do
    local counts = redis.call('HMGET', p .. 'slot:' .. app .. ':' .. slot, 'requests', 'successes')
    flat[#flat + 1] = tonumber(slot)
    flat[#flat + 1] = tonumber(counts[1] or '0')
    flat[#flat + 1] = tonumber(counts[2] or '0')
  end
end
return flat
"""
"""What a month ledger is computed from, for each given ``app, start, end, n, day 1..n, YYYY-MM`` (days as
``DD``; none for the whole calendar month): the requests and successes of the days, then the count and
``slot, requests, successes`` of the slots in ``[start, end)`` whose verdict is unavailable or data-quality;
all flat, in one reply."""

_SLOT_STATES = """
local p = ARGV[1]
local flat = {}
for i = 2, #ARGV do
  local counts = redis.call('HMGET', p .. 'slot:' .. ARGV[i], 'requests', 'successes')
  local verdict = redis.call('HMGET', p .. 'verdict:' .. ARGV[i], 'revision', 'requests', 'successes',
                             'unavailable', 'exempt', 'data_quality', 'clause')
  flat[#flat + 1] = counts[1] or '0'
  flat[#flat + 1] = counts[2] or '0'
  for k = 1, 7 do
    flat[#flat + 1] = verdict[k] or ''
  end
end
return flat
"""
"""For each ``app:slot``: its counts, then its latest verdict's fields (empty when it has none), flat, in one reply."""

_STATE_FIELDS = 9
"""Values per slot in ``_SLOT_STATES``' reply."""

_SLOT_LISTING = """
local p, app = ARGV[1], ARGV[2]
local first, after = tonumber(ARGV[4]), tonumber(ARGV[5])
local flat = {}
for _, slot in ipairs(redis.call('SMEMBERS', p .. 'slots:' .. app .. ':' .. ARGV[3])) do
  local start = tonumber(slot)
  if first <= start and start < after then
    local counts = redis.call('HMGET', p .. 'slot:' .. app .. ':' .. slot, 'requests', 'successes')
    flat[#flat + 1] = slot
    flat[#flat + 1] = counts[1] or '0'
    flat[#flat + 1] = counts[2] or '0'
    flat[#flat + 1] = redis.call('HGET', p .. 'verdict:' .. app .. ':' .. slot, 'revision') or ''
  end
end
return flat
"""
"""For each slot of the app with traffic in calendar month ARGV[3] (``YYYY-MM``) starting in ``[ARGV[4], ARGV[5])``:
``slot, requests, successes, revision`` (empty: not closed), flat, in one reply; one step, so a batch counted
meanwhile is in it whole or not at all."""

_RELEASE_IDS = """
local p = ARGV[1]
local members = redis.call('ZRANGEBYSCORE', p .. 'idsheld', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(members) do
  redis.call('DEL', p .. 'ids:' .. member .. ':requests', p .. 'ids:' .. member .. ':successes')
  redis.call('ZREM', p .. 'idsheld', member)
end
return #members
"""
"""Drops the id sets of up to ARGV[3] slots last judged at or before ARGV[2] (stream time), in one step."""

_MONTH_CHUNK = 500
"""Service months per ``_MONTH_INPUTS`` call: some 35 arguments each, and Redis is not held long."""

_COUNTERS_CHUNK = 1000
"""Apps per ``_APP_COUNTERS`` call: its ARGV stays well under Lua's ``unpack`` limit, and Redis is not held long."""


@dataclass(frozen=True)
class SlotBatch:
    """One slot's new event ids from a partition batch, with the local day the slot lies in."""

    app_id: str
    slot_ms: int
    day: str
    event_ids: Sequence[str]


@dataclass(frozen=True)
class BatchStep:
    """One shard's part of a partition batch (:meth:`Store.apply_steps`), covering records ``first..last_offset``.

    ``expected`` is the shard's applied offset of the partition (-1: none) the
    caller's reading continues from; ``refused`` and ``covered`` (dead letters
    and the minutes of the batch's events) go to the home shard only.
    """

    expected: int
    first_offset: int
    last_offset: int
    slots: Sequence[SlotBatch]
    stream_ms: int
    refused: int = 0
    covered: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True)
class Applied:
    """A partition's applied offset (-1: none) in each shard of the namespace."""

    shards: tuple[int, ...]

    @property
    def least(self) -> int:
        """Where every shard has applied up to: the reading of the partition continues after it."""
        return min(self.shards)


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


@dataclass(frozen=True)
class MonthSpan:
    """A service month of an app to read the ledger's inputs of: ``[start_ms, end_ms)``, its calendar month
    (``YYYY-MM``) and its local days in it (``DD``; none when it is the whole calendar month)."""

    app_id: str
    start_ms: int
    end_ms: int
    month: str
    days: Sequence[str]


@dataclass(frozen=True)
class MonthInputs:
    """What a month ledger is computed from: the slots flagged unavailable or data-quality, the month's totals."""

    flagged: dict[int, SlotCounts]
    totals: SlotCounts


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

    def days(self, app_id: str, month: str) -> str:
        return self._name("days", app_id, month)

    def slots(self, app_id: str, month: str) -> str:
        return self._name("slots", app_id, month)

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


class _Shard:
    """One shard of the namespace: its key names, and the highest step counter its steps have seen."""

    def __init__(self, index: int, prefix: str) -> None:
        self.index = index
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._seen: tuple[int, int] = (0, 0)
        """(generation, step counter): the highest counter this shard's steps have seen in that generation."""

    def min_seq(self, fence: Fence) -> int:
        generation, seq = self._seen
        return seq if generation == fence.generation else 0

    def saw(self, fence: Fence, seq: int) -> None:
        """Remember the shard's step counter: Redis coming back below it means it lost writes."""
        if seq and (fence.generation, seq) > self._seen:
            self._seen = (fence.generation, int(seq))


class Store:
    """The live state in Redis under ``prefix``, in ``shards`` shards by app; the only code that knows its key names.

    Each shard is a namespace of its own (:mod:`stream.live.shards`): an app's
    slots, verdicts, months and counters are in its shard; every shard records
    every partition's applied offset and stream time, and the home shard (the
    first) also what belongs to no app: coverage, dead-letter counts,
    exemptions and the closer's lease. Every atomic step touches one shard.
    """

    def __init__(self, redis: Redis | RedisCluster, prefix: str = "sla:", shards: int = 1, cluster: bool = False):
        self.redis = redis
        self.prefix = prefix
        self.shards = [_Shard(i, p) for i, p in enumerate(shard_prefixes(prefix, shards, cluster))]
        self.home = self.shards[0]
        self.keys = self.home.keys
        """The home shard's key names (a single shard's: all of them)."""
        self._layout = prefix + "layout"
        self._apply = redis.register_script(_APPLY_BATCH)
        self._commit = redis.register_script(_COMMIT_VERDICTS)
        self._initialise = redis.register_script(_INITIALISE)
        self._new_generation = redis.register_script(_NEW_GENERATION)
        self._finish_rebuild = redis.register_script(_FINISH_REBUILD)
        self._save_months = redis.register_script(_SAVE_MONTHS)
        self._app_counters = redis.register_script(_APP_COUNTERS)
        self._month_inputs = redis.register_script(_MONTH_INPUTS)
        self._slot_states = redis.register_script(_SLOT_STATES)
        self._slot_listing = redis.register_script(_SLOT_LISTING)
        self._release_ids = redis.register_script(_RELEASE_IDS)

    @classmethod
    def of(cls, redis: Redis | RedisCluster, settings: Settings, prefix: str | None = None) -> Store:
        """The store of ``settings``' namespace, or of another one (``prefix``) laid out the same way."""
        return cls(
            redis, settings.key_prefix if prefix is None else prefix, settings.redis_shards, settings.redis_cluster
        )

    def shard_of(self, app_id: str) -> _Shard:
        return self.shards[shard_of(app_id, len(self.shards))]

    def keys_of(self, app_id: str) -> Keys:
        """The key names of the shard holding ``app_id``."""
        return self.shard_of(app_id).keys

    def _by_shard(self, slots: Iterable[tuple[str, int]]) -> dict[int, list[tuple[str, int]]]:
        grouped: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for app_id, slot_ms in slots:
            grouped[self.shard_of(app_id).index].append((app_id, slot_ms))
        return grouped

    def batch_steps(
        self,
        expected: Sequence[int],
        offsets: tuple[int, int],
        slots: Iterable[SlotBatch],
        stream_ms: int,
        refused: int = 0,
        covered: Sequence[tuple[str, int]] = (),
        only: Iterable[int] | None = None,
    ) -> dict[int, BatchStep]:
        """A partition batch as one step per shard (``only`` those shards): each shard gets its apps' slots and the
        batch's stream time; the home shard also its dead-letter count and coverage."""
        by_shard: dict[int, list[SlotBatch]] = defaultdict(list)
        for batch in slots:
            by_shard[self.shard_of(batch.app_id).index].append(batch)
        first, last = offsets
        return {
            i: BatchStep(
                expected[i], first, last, by_shard.get(i, []), stream_ms, *((refused, covered) if i == 0 else ())
            )
            for i in (range(len(self.shards)) if only is None else only)
        }

    async def apply_steps(
        self, fence: Fence, tp: str, field: str, steps: Mapping[int, BatchStep]
    ) -> dict[int, ApplyResult]:
        """Apply each shard's step of one partition batch, concurrently; each shard's result.

        Each step is atomic and fenced by its shard's applied offset of the
        partition, so a batch half applied when a worker died is completed by
        the next reading without counting the other half twice.
        """
        if field not in COUNT_FIELDS:
            raise ValueError(f"unknown count field {field!r}")

        async def apply(shard: _Shard, step: BatchStep) -> ApplyResult:
            args: list[object] = [shard.prefix, tp, step.first_offset, step.last_offset, step.stream_ms, field]
            args += [step.refused, fence.generation, fence.state, step.expected, shard.min_seq(fence)]
            args.append(len(step.covered))
            for label, bit in step.covered:
                args += [label, bit]
            for batch in step.slots:
                args += [batch.app_id, batch.slot_ms, batch.day, len(batch.event_ids), *batch.event_ids]
            status, applied_offset, counted, duplicates, late, seq = await self._apply(
                keys=[shard.keys.meta], args=args
            )
            shard.saw(fence, seq)
            return ApplyResult(ApplyStatus(status), int(applied_offset), counted, duplicates, late)

        results = await asyncio.gather(*(apply(self.shards[i], step) for i, step in steps.items()))
        return dict(zip(steps, results, strict=True))

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
        """Count one partition's batch, covering records ``min(offsets)..max(offsets)``, in every shard.

        ``expected_offset`` is the applied offset (-1: none) the caller's
        reading of the partition continues from, in every shard. ``covered`` are the minutes
        its valid events happened in, as ``(YYYY-MM, bit)`` of the calendar
        month's coverage map (:class:`stream.sla.coverage.MonthBits`). Nothing is counted unless the
        status is ``APPLIED``; see :class:`ApplyStatus` for what each other
        status asks of the caller. With several shards, the result is the first
        shard's that is neither applied nor already applied, else their sum.
        """
        steps = self.batch_steps(
            [expected_offset] * len(self.shards), (min(offsets), max(offsets)), slots, stream_ms, refused, covered
        )
        results = list((await self.apply_steps(fence, tp, field, steps)).values())
        for result in results:
            if result.status not in (ApplyStatus.APPLIED, ApplyStatus.ALREADY_APPLIED):
                return result
        applied = any(r.status is ApplyStatus.APPLIED for r in results)
        return ApplyResult(
            ApplyStatus.APPLIED if applied else ApplyStatus.ALREADY_APPLIED,
            min(r.applied_offset for r in results),
            sum(r.counted for r in results),
            sum(r.duplicates for r in results),
            sum(r.late for r in results),
        )

    async def meta(self) -> Meta | None:
        """The namespace's marker, or None when a shard has none (never initialised, or lost).

        Shards whose markers disagree are a move to a new generation, or a
        rebuild, cut short: a namespace being rebuilt anywhere reads as
        rebuilding; live shards of an older generation are moved to the newest.
        Raises :class:`LayoutMismatch` when the namespace was made with another number of shards, or by a
        version of sla-stream with another key layout (:data:`LAYOUT_VERSION`).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._layout)
        for shard in self.shards:
            pipe.hgetall(shard.keys.meta)
        layout, *raws = await pipe.execute()
        if layout is None and any(raws):
            layout = "1"  # made before the layout was recorded: one shard, version 1
        if layout is not None:
            self._check_layout(layout)
        if not all(raws):
            return None
        metas = [Meta(int(raw["generation"]), raw["state"], int(raw["initialised_ms"])) for raw in raws]
        newest = max(metas, key=lambda meta: meta.generation)
        rebuilding = [meta for meta in metas if meta.state != "live"]
        if rebuilding:
            return max(rebuilding, key=lambda meta: meta.generation)
        for shard, meta in zip(self.shards, metas, strict=True):
            if meta.generation < newest.generation:
                await self._new_generation(keys=[shard.keys.meta], args=[meta.generation, newest.generation])
        return newest

    def _check_layout(self, layout: str) -> None:
        """Refuse a namespace laid out by another version of sla-stream, or in another number of shards."""
        version, _, shards = layout.rpartition(":")
        if int(version or "1") != LAYOUT_VERSION:
            raise LayoutMismatch(
                f"the live state under key prefix {self.prefix!r} is laid out as version {version or 1} of "
                f"sla-stream's keys, not {LAYOUT_VERSION}: `sla-stream rebuild` it (it counts the topics again)"
            )
        if int(shards) != len(self.shards):
            raise LayoutMismatch(
                f"the live state under key prefix {self.prefix!r} is in {shards} shards, not the {len(self.shards)} "
                "the settings give ([redis] shards): set them back, or `sla-stream rebuild` it with the new number"
            )

    @property
    def _layout_value(self) -> str:
        return f"{LAYOUT_VERSION}:{len(self.shards)}"

    async def initialise(self, generation: int) -> bool:
        """Write the marker of a new, live namespace; False (nothing written) when it has one already."""
        await self.redis.set(self._layout, self._layout_value, nx=True)
        written = [await self._initialise(keys=[shard.keys.meta], args=[generation]) for shard in self.shards]
        return any(written)

    async def new_generation(self, fence: Fence, generation: int) -> bool:
        """Move the live namespace of ``fence`` to ``generation``; False if it is not ``fence``'s any more.

        For when Redis lost writes: verdict revisions it had counted up to
        were published and are now forgotten, so revisions published from
        here on must be told apart by a larger generation. The home shard
        decides who moves it (one compare-and-set: of workers noticing the loss
        at once, one wins); the winner moves the other shards, and a move cut
        short is completed by the next :meth:`meta`.
        """
        args = [fence.generation, generation]
        if not await self._new_generation(keys=[self.home.keys.meta], args=args):
            return False
        for shard in self.shards[1:]:
            await self._new_generation(keys=[shard.keys.meta], args=args)
        return True

    async def begin_rebuild(self, generation: int) -> int:
        """Mark the namespace as being rebuilt with a new generation, then delete everything else in it.

        The markers go first, so every worker's step is refused from that
        instant on. Returns how many keys were deleted.
        """
        marker = {"generation": generation, "state": "rebuilding", "initialised_ms": generation}
        await self.redis.set(self._layout, self._layout_value)  # first: a marker without it reads as version 1
        for shard in self.shards:
            await self.redis.hset(shard.keys.meta, mapping=marker)
        return await self.remove_all(keep={shard.keys.meta for shard in self.shards} | {self._layout})

    async def remove_all(self, keep: Collection[str] = ()) -> int:
        """Delete every key of the namespace (but those in ``keep``), in this or any other number of shards;
        how many were deleted."""
        prefixes = tuple(shard.prefix for shard in self.shards)
        deleted = 0
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=10_000):
            ours = key.startswith(prefixes) or key == self._layout or in_some_shard(self.prefix, key)
            if key not in keep and ours:
                batch.append(key)
            if len(batch) >= 10_000:
                deleted += await self._delete(batch)
                batch = []
        return deleted + await self._delete(batch)

    async def _delete(self, keys: Sequence[str]) -> int:
        """UNLINK, not DEL: Redis frees large sets off its main thread, which goes on serving the workers."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("UNLINK", key)  # the cluster pipeline's unlink() is not a plain command
        return sum(await pipe.execute()) if keys else 0

    async def finish_rebuild(self, generation: int) -> bool:
        """Hand a rebuilt namespace to the workers (state ``live``); False if another rebuild took it over."""
        finished = [await self._finish_rebuild(keys=[shard.keys.meta], args=[generation]) for shard in self.shards]
        return all(finished)

    async def partition_states(self, tps: Iterable[str]) -> dict[str, PartitionState]:
        """Each partition as all shards have it: the least offset, stream time, idle time (None: a shard has none)."""
        names = list(tps)
        if not names:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            for hash_name in (shard.keys.offsets, shard.keys.streamtime, shard.keys.idle):
                pipe.hmget(hash_name, names)
        replies = await pipe.execute()
        return {tp: PartitionState(*(_least(replies[k::3], i) for k in range(3))) for i, tp in enumerate(names)}

    async def least_stream_time(self) -> int | None:
        """The least stream time of the partitions that have one (None: none has): read up to it by all of them."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.hvals(shard.keys.streamtime)
        return min((int(t) for times in await pipe.execute() for t in times), default=None)

    async def applied_offsets(self, tps: Iterable[str]) -> dict[str, Applied]:
        """Each partition's applied offset in every shard."""
        names = list(tps)
        if not names:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.hmget(shard.keys.offsets, names)
        replies = await pipe.execute()
        return {tp: Applied(tuple(-1 if r[i] is None else int(r[i]) for r in replies)) for i, tp in enumerate(names)}

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
        """Record in every shard which partitions are caught up and quiet (with the wall time seen), and which not."""
        busy = list(busy)
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            if idle:
                pipe.hset(shard.keys.idle, mapping=dict(idle))
            if busy:
                pipe.hdel(shard.keys.idle, *busy)
        await pipe.execute()

    async def slots_to_close(self, before_slot_ms: int, limit: int) -> list[tuple[str, int]]:
        """Open slots starting before ``before_slot_ms``, oldest first: ``(app, slot_ms)``; up to ``limit`` a shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.zrangebyscore(shard.keys.open, "-inf", f"({before_slot_ms}", start=0, num=limit)
        slots = [split_slot_member(member) for members in await pipe.execute() for member in members]
        return sorted(slots, key=lambda slot: slot[1])

    async def dirty_slots(self, limit: int) -> list[tuple[str, int]]:
        """Closed slots to judge again (a late event, an exemption): up to ``limit`` a shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.srandmember(shard.keys.dirty, limit)
        return [split_slot_member(member) for members in await pipe.execute() for member in members]

    async def mark_dirty(self, slots: Iterable[tuple[str, int]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for index, members in self._by_shard(slots).items():
            pipe.sadd(self.shards[index].keys.dirty, *(f"{app}:{slot_ms}" for app, slot_ms in members))
        await pipe.execute()

    async def slot_counts(self, slots: Sequence[tuple[str, int]]) -> list[SlotCounts]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hmget(self.keys_of(app).slot(app, slot_ms), COUNT_FIELDS)
        return [SlotCounts(int(r or 0), int(s or 0)) for r, s in await pipe.execute()] if slots else []

    async def slot_states(self, slots: Sequence[tuple[str, int]]) -> list[tuple[SlotCounts, StoredVerdict | None]]:
        """Each slot's counts and latest verdict (None: never judged), as the closer judges them: one script call a
        shard and chunk of slots, one flat reply, instead of two replies a slot."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, (app_id, _) in enumerate(slots):
            by_shard[self.shard_of(app_id).index].append(position)
        states: list[tuple[SlotCounts, StoredVerdict | None]] = [(SlotCounts(0, 0), None)] * len(slots)
        for index, positions in by_shard.items():
            shard = self.shards[index]
            for start in range(0, len(positions), _COUNTERS_CHUNK):
                chunk = positions[start : start + _COUNTERS_CHUNK]
                members = [f"{slots[p][0]}:{slots[p][1]}" for p in chunk]
                flat = await self._slot_states(keys=[shard.keys.meta], args=[shard.prefix, *members])
                for n, position in enumerate(chunk):
                    requests, successes, revision, v_req, v_succ, unavailable, exempt, quality, clause = flat[
                        n * _STATE_FIELDS : (n + 1) * _STATE_FIELDS
                    ]
                    verdict = None
                    if revision:
                        verdict = StoredVerdict(
                            revision=int(revision),
                            counts=SlotCounts(int(v_req), int(v_succ)),
                            unavailable=unavailable == "1",
                            exempt=exempt == "1",
                            data_quality=quality == "1",
                            clause=clause,
                        )
                    states[position] = (SlotCounts(int(requests), int(successes)), verdict)
        return states

    async def slot_listing(
        self, app_id: str, month: str, span_ms: tuple[int, int]
    ) -> dict[int, tuple[SlotCounts, int | None]]:
        """The counts and latest verdict revision (None: not closed) of each of the app's slots with traffic in
        calendar month ``month`` (``YYYY-MM``) starting in ``span_ms``, by slot start.

        One script in the app's shard, reading only the slots the month's index
        (``slots:``) lists, so a quiet app's month costs nothing however long;
        one step, so a batch counted meanwhile is in it whole or not at all.
        (Not a MULTI pipeline: redis-py 8.2 runs a cluster transaction's every
        command on a thread of its own, 0.7 ms each.)
        """
        shard = self.shard_of(app_id)
        flat = await self._slot_listing(keys=[shard.keys.meta], args=[shard.prefix, app_id, month, *span_ms])
        listing = {
            int(flat[i]): (SlotCounts(int(flat[i + 1]), int(flat[i + 2])), _int_or_none(flat[i + 3] or None))
            for i in range(0, len(flat), 4)
        }
        return dict(sorted(listing.items()))

    async def verdicts(self, slots: Sequence[tuple[str, int]]) -> list[StoredVerdict | None]:
        pipe = self.redis.pipeline(transaction=False)
        for app, slot_ms in slots:
            pipe.hgetall(self.keys_of(app).verdict(app, slot_ms))
        return [_stored_verdict(raw) if raw else None for raw in await pipe.execute()] if slots else []

    async def commit_verdicts(self, fence: Fence, commits: Sequence[VerdictCommit]) -> list[int | None]:
        """Close (or re-judge) slots, :data:`COMMIT_BATCH` to a Redis step; one revision (or None) per commit.

        Each slot is committed only if its counts and revision are still those
        its verdict was computed from; it is then taken out of ``open`` and
        ``dirty``, its event ids are held for duplicate detection from
        ``hold_from_ms`` (stream time), and its month is marked for a ledger
        update, all in the same step, so a crash cannot lose one of them. The
        result is the revision now stored, or None for a slot whose counts or
        revision moved since they were read: the caller judges it again later.
        Shards commit concurrently. Raises :class:`Fenced` (or :class:`RolledBack`) when a shard is
        not ``fence``'s: nothing of that shard's batch was committed.
        """
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, commit in enumerate(commits):
            by_shard[self.shard_of(commit.app_id).index].append(position)
        revisions: list[int | None] = [None] * len(commits)

        async def commit_shard(shard: _Shard, positions: list[int]) -> None:
            for start in range(0, len(positions), COMMIT_BATCH):
                batch = positions[start : start + COMMIT_BATCH]
                args: list[object] = [shard.prefix, fence.generation, fence.state, shard.min_seq(fence), len(batch)]
                for position in batch:
                    args += commits[position].args()
                reply = await self._commit(keys=[shard.keys.meta], args=args)
                status, seq = reply[0], reply[1]
                if status == -3:
                    raise Fenced(
                        f"the namespace {self.prefix!r} is no longer generation {fence.generation} ({fence.state})"
                    )
                if status == -6:
                    raise RolledBack(
                        f"the namespace {self.prefix!r} holds fewer steps than were made: Redis lost writes"
                    )
                shard.saw(fence, seq)
                for position, result in zip(batch, reply[2], strict=True):
                    revisions[position] = None if result < 0 else int(result)

        await asyncio.gather(*(commit_shard(self.shards[i], positions) for i, positions in by_shard.items()))
        return revisions

    async def ledgers_due(self) -> list[LedgerDue]:
        """Every month ledger waiting to be recomputed, by month then app."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.smembers(shard.keys.ledgerdue)
        return sorted(LedgerDue.parse(member) for members in await pipe.execute() for member in members)

    async def ledgers_done(self, ledgers: Sequence[LedgerDue]) -> None:
        """Unmark these month ledgers as due (each was saved): one command a shard."""
        by_shard: dict[int, list[str]] = defaultdict(list)
        for ledger in ledgers:
            by_shard[self.shard_of(ledger.app_id).index].append(ledger.member)
        pipe = self.redis.pipeline(transaction=False)
        for index, members in by_shard.items():
            pipe.srem(self.shards[index].keys.ledgerdue, *members)
        if by_shard:
            await pipe.execute()

    async def release_ids(self, closed_before_ms: int, limit: int = 1000) -> int:
        """Drop the id sets of slots last judged before ``closed_before_ms`` (stream time), up to ``limit`` a shard,
        one step a shard."""
        released = await asyncio.gather(
            *(
                self._release_ids(keys=[shard.keys.meta], args=[shard.prefix, closed_before_ms, limit])
                for shard in self.shards
            )
        )
        return sum(int(n) for n in released)

    async def outbox(self, shard: int, limit: int) -> list[tuple[str, str]]:
        """The first ``limit`` verdict messages of ``shard``'s outbox, oldest first."""
        raw = await self.redis.lrange(self.shards[shard].keys.outbox, 0, 2 * limit - 1)
        return [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    async def outbox_done(self, shard: int, count: int) -> None:
        await self.redis.ltrim(self.shards[shard].keys.outbox, 2 * count, -1)

    def _chosen(self, shards: Iterable[int] | None) -> list[_Shard]:
        return self.shards if shards is None else [self.shards[i] for i in shards]

    async def changes(self) -> list[tuple[int, int]]:
        """Each shard's ``(generation, changes)``: the steps that counted an event or stored a verdict bump
        ``changes``, so a shard whose pair is the same as at an earlier read changed none of its apps' counts,
        slots or verdicts since (``(0, 0)``: no marker)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.hmget(shard.keys.meta, ["generation", "changes"])
        return [(int(generation or 0), int(changes or 0)) for generation, changes in await pipe.execute()]

    async def open_slots(self, shards: Iterable[int] | None = None) -> list[tuple[str, int]]:
        """The open slots (of ``shards``; None: all)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self._chosen(shards):
            pipe.zrange(shard.keys.open, 0, -1)
        return [split_slot_member(member) for members in await pipe.execute() for member in members]

    async def newest_open_slots(self, shards: Iterable[int] | None = None) -> dict[str, int]:
        """Each app's newest open slot start (apps with none open are absent), of ``shards`` (None: all)."""
        newest: dict[str, int] = {}
        for app_id, slot_ms in await self.open_slots(shards):
            newest[app_id] = max(slot_ms, newest.get(app_id, slot_ms))
        return newest

    async def last_closed_slot(self, app_id: str) -> int | None:
        return _int_or_none(await self.redis.hget(self.keys_of(app_id).lastclosed, app_id))

    async def apps(self, shards: Iterable[int] | None = None) -> set[str]:
        """The apps with an event counted (in ``shards``; None: all)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self._chosen(shards):
            pipe.smembers(shard.keys.apps)
        return {app_id for members in await pipe.execute() for app_id in members}

    async def knows_app(self, app_id: str) -> bool:
        """Whether the app has had an event counted."""
        return bool(await self.redis.sismember(self.keys_of(app_id).apps, app_id))

    async def unavailable_slots(self, app_id: str, start_ms: int, end_ms: int) -> list[int]:
        found = await self.redis.zrangebyscore(self.keys_of(app_id).unavailable(app_id), start_ms, f"({end_ms}")
        return [int(s) for s in found]

    async def month_inputs(self, spans: Sequence[MonthSpan]) -> list[MonthInputs]:
        """What each span's month ledger is computed from, in one script call a shard and chunk of spans."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, span in enumerate(spans):
            by_shard[self.shard_of(span.app_id).index].append(position)
        found: list[MonthInputs | None] = [None] * len(spans)
        for index, positions in by_shard.items():
            shard = self.shards[index]
            for start in range(0, len(positions), _MONTH_CHUNK):
                chunk = positions[start : start + _MONTH_CHUNK]
                args: list[object] = [shard.prefix]
                for position in chunk:
                    span = spans[position]
                    args += [span.app_id, span.start_ms, span.end_ms, len(span.days), *span.days, span.month]
                flat = await self._month_inputs(keys=[shard.keys.meta], args=args)
                at = 0
                for position in chunk:
                    totals = SlotCounts(int(flat[at]), int(flat[at + 1]))
                    flagged = {
                        int(flat[k]): SlotCounts(int(flat[k + 1]), int(flat[k + 2]))
                        for k in range(at + 3, at + 3 + 3 * int(flat[at + 2]), 3)
                    }
                    found[position] = MonthInputs(dict(sorted(flagged.items())), totals)
                    at += 3 + 3 * int(flat[at + 2])
        return found  # type: ignore[return-value]

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

    async def save_months(self, months: Sequence[tuple[str, date, Mapping[str, Any]]]) -> None:
        """Save month ledgers ``(app, first day, figures)``, stamped with the next ledger version of the app's shard:
        one step a shard and chunk of :data:`_SAVE_CHUNK` ledgers."""
        by_shard: dict[int, list[tuple[str, date, Mapping[str, Any]]]] = defaultdict(list)
        for month in months:
            by_shard[self.shard_of(month[0]).index].append(month)
        for index, saved in by_shard.items():
            shard = self.shards[index]
            for start in range(0, len(saved), _SAVE_CHUNK):
                args: list[object] = [shard.prefix]
                for app_id, first_day, figures in saved[start : start + _SAVE_CHUNK]:
                    args += [f"{app_id}:{first_day.isoformat()}", msgspec.json.encode(figures)]
                await self._save_months(keys=[shard.keys.meta], args=args)

    async def months_changed(self, after: Sequence[int]) -> tuple[tuple[int, ...], list[tuple[str, date]]]:
        """Each shard's ledger version now, and the ``(app, first day)`` of every ledger saved after ``after``
        (the versions a reader saw last; empty: none).

        A shard's version below the one in ``after`` means the namespace was
        rebuilt or Redis lost writes: read every ledger again.
        """
        seen = list(after) or [0] * len(self.shards)
        pipe = self.redis.pipeline(transaction=False)
        for shard, version in zip(self.shards, seen, strict=True):
            pipe.get(shard.keys.ledgerversion)
            pipe.zrangebyscore(shard.keys.ledgerchanged, f"({version}", "+inf")
        replies = await pipe.execute()
        changed = []
        for members in replies[1::2]:
            for member in members:
                app_id, _, day = member.rpartition(":")
                changed.append((app_id, date.fromisoformat(day)))
        return tuple(int(version or 0) for version in replies[0::2]), changed

    async def months(self, wanted: Sequence[tuple[str, date]]) -> list[dict[str, Any] | None]:
        """The month ledgers of ``(app, first day)`` pairs, in one round trip (None: none saved)."""
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for app_id, day in wanted:
            pipe.get(self.keys_of(app_id).month(app_id, day))
        return [None if value is None else json.loads(value) for value in await pipe.execute()]

    async def month(self, app_id: str, first_day: date) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys_of(app_id).month(app_id, first_day))
        return None if raw is None else json.loads(raw)

    async def app_counters(self, app_ids: Sequence[str]) -> dict[str, AppCounters]:
        """Each app's counters since its state began: calls counted, and slots by their first verdict.

        One script call a shard returns them all as one flat array of numbers, in
        chunks of :data:`_COUNTERS_CHUNK` apps: a reply a chunk, not two an app
        (10,000 apps: 20,000 replies to parse every refresh otherwise).
        """
        by_shard: dict[int, list[str]] = defaultdict(list)
        for app_id in app_ids:
            by_shard[self.shard_of(app_id).index].append(app_id)
        counters = {}
        for index, apps in by_shard.items():
            shard = self.shards[index]
            for start in range(0, len(apps), _COUNTERS_CHUNK):
                chunk = apps[start : start + _COUNTERS_CHUNK]
                flat = [int(n) for n in await self._app_counters(keys=[shard.keys.meta], args=[shard.prefix, *chunk])]
                for i, app_id in enumerate(chunk):
                    counters[app_id] = AppCounters(*flat[6 * i : 6 * i + 6])
        return counters

    def closer_lease(self, timeout_s: float) -> Lock:
        """The closer's lease: one closer tick at a time, whichever worker leads (not acquired yet)."""
        return self.redis.lock(self.keys.closer_lease, timeout=timeout_s)

    async def closer_ticking(self) -> bool:
        """Whether some worker's closer is mid-tick now (it holds the lease only while a tick runs)."""
        return bool(await self.redis.exists(self.keys.closer_lease))


def redis_client(url: str, socket_timeout_s: float = 10.0, cluster: bool = False) -> Redis | RedisCluster:
    """A worker's Redis client: bounded connect and call times, so an outage is noticed and waited out.

    A call that has not answered in ``socket_timeout_s`` fails (and is
    retried by the caller): nothing waits forever on a dead socket. A call
    that fails on a connection is retried on a fresh one first: after
    Redis restarts, every pooled connection fails once, and that is not an
    outage. (A retried script is safe: the offset fence and the verdict's
    compare-and-set make a repeat a no-op.)

    ``cluster``: redis-py's ``RedisCluster`` (the well-kept client that routes
    each command and script to the node serving its hash slot, and follows a
    failover) on the cluster ``url`` names one node of. It retries a call a few
    times while a master fails over (about 4 s), then raises to the caller,
    which waits the outage out like a single Redis's (:mod:`stream.live.health`).
    Up to :data:`CLUSTER_CONNECTIONS` connections a node: a worker sends one
    step a partition and shard at once, and redis-py refuses a call past the limit rather than wait.
    Commands are packed by hiredis (:mod:`stream.live.hiredis_packing`).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout_s,
        "health_check_interval": 5,
    }
    if cluster:
        return use_hiredis_packing(
            RedisCluster.from_url(
                url,
                **options,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                max_connections=CLUSTER_CONNECTIONS,
            )
        )
    client = Redis.from_url(
        url,
        **options,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return use_hiredis_packing(client)


CLUSTER_CONNECTIONS = 1000
"""Connections a worker may open to each cluster node (redis-py's default is 100)."""


class Fenced(Exception):
    """A step was refused: the namespace lost its marker, or has another generation or state."""


LAYOUT_VERSION = 2
"""The version of the key layout, recorded in ``layout`` with the number of shards (``2:N``): 2 keeps a calendar
month's daily totals in one hash (``days:``), where 1 had a key a day, and indexes each month's slots with traffic
(``slots:``)."""


class LayoutMismatch(Exception):
    """The namespace was made with another number of shards than the settings give, or by another key layout."""


class RolledBack(Exception):
    """A step was refused: Redis holds fewer of the namespace's steps than this store saw made (it lost writes)."""


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


def _least(shard_replies: Sequence[Sequence[str | None]], i: int) -> int | None:
    """The least of the ``i``-th values the shards hold (None if a shard holds none)."""
    values = [reply[i] for reply in shard_replies]
    return None if None in values else min(int(value) for value in values)  # type: ignore[arg-type]


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
