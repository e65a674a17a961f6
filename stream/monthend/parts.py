"""One month's replay split across hosts sharing one Redis: the run's record in Redis, and part 0's wait for the rest.

``sla-stream replay --part K/N --run NAME`` runs on N hosts (or N times on
one), each counting part K of the month's input partitions into one shared
namespace, so that a month of many apps is counted by several machines'
cores at once. Redis's offset fence already makes the partitions independent
(each is one part's alone); what the parts must agree on is kept here, in one
Redis hash a run (:func:`stream.monthend.replay.run_record_key`):

``run``
    the run's record (:class:`RunRecord`): its terms (month, number of parts,
    apps, time zone, topics, shards; a part started with others is refused),
    the namespace's generation, the part that began the run, and the month's
    read plan (start and end offsets of every partition). The first part to
    start writes it, in one step (``HSETNX``); every other part adopts it, so
    all read to the same end offsets even if the topics grew meanwhile, and
    split them the same way (:func:`part_plans`).
``ready``
    set by the part that began the run once it has made the namespace
    (``Store.begin_rebuild``, once, with the recorded generation): the other
    parts join that generation and count only after it.
``done:K``
    part K counted its share: its ingest totals (:class:`PartDone`), for part
    0's summary.
``removing``
    part 0 is removing the finished run: no part may join it any more.

The hash lies beside the namespace, not in it: beginning the namespace
deletes every key in it (what a stale run of the same name left), and the
record must outlive that, or a second part could begin the run again. It is
named by the run alone, whatever the month, so that a part given another
month is refused instead of waiting for parts that never come.

Part 0 runs the closer, waits for every part (:func:`wait_for_parts`) and
prints the statements. A part that stops (killed, its host lost) leaves what
it counted: run again with the same name, it reads each partition on from
the offset Redis applied (:func:`resumed`), exactly once thanks to the fence.

Example (a plan split in three parts: the third has nothing to read):
    >>> from aiokafka import TopicPartition as TP
    >>> plan = ReadPlan({TP("r", 0): 0, TP("s", 0): 5}, {TP("r", 0): 90, TP("s", 0): 50})
    >>> [part.total for part in part_plans(plan, 3)]
    [90, 45, 0]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

from aiokafka import TopicPartition
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from stream.live.ingest import IngestStats
from stream.live.recount import Every, ReadPlan, mark_read_partitions_idle, tp_name
from stream.live.store import Store
from stream.monthend.share import IDLE_EVERY_S, POLL_S, split

DEFAULT_TIMEOUT_S = 600.0
"""How long part 0 waits for a part whose partitions make no progress before it stops (``--part-timeout``)."""
WAITING_LINE_EVERY_S = 30.0
"""How often part 0 says which parts it is waiting for, when that has not changed."""


class RunRefused(Exception):
    """Why a part cannot join its run, or part 0 stopped waiting for the others; printed as one line."""


@dataclass(frozen=True)
class Part:
    """This command's part of a split replay: part ``index`` (from 0) of ``parts``, of the run ``name``."""

    name: str
    index: int
    parts: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    """How long part 0 waits for a part that makes no progress, and any part for the run's namespace to be made."""

    @property
    def label(self) -> str:
        return f"part {self.index}/{self.parts}"


@dataclass(frozen=True)
class RunTerms:
    """What every part of a run must be started with: the same month, parts, apps and counting settings."""

    month: str
    parts: int
    apps: tuple[str, ...]
    """The ``--app`` ids, sorted (empty: every app)."""
    timezone: str
    topics: tuple[str, ...]
    """The input topics."""
    shards: int
    """``[redis] shards``: another number would count into other keys."""

    def difference(self, ours: RunTerms) -> str | None:
        """The first term in which ``ours`` differs from these (the recorded ones), in words; None when all agree.

        Example:
            >>> recorded = RunTerms("2026-11", 2, (), "Asia/Shanghai", ("req", "ok"), 1)
            >>> recorded.difference(recorded) is None
            True
            >>> recorded.difference(RunTerms("2026-11", 3, ("1400000001",), "Asia/Shanghai", ("req", "ok"), 1))
            'parts 2, this part has 3'
        """
        for item in fields(self):
            theirs, mine = getattr(self, item.name), getattr(ours, item.name)
            if theirs != mine:
                return f"{item.name} {_shown(theirs)}, this part has {_shown(mine)}"
        return None


def _shown(value: object) -> str:
    """A term's value in a message: a list joined by commas, no apps as "every app"."""
    if isinstance(value, tuple):
        return ", ".join(value) or "every app"
    return str(value)


@dataclass(frozen=True)
class RunRecord:
    """A run as its first part recorded it: every part adopts this plan and joins this generation.

    Example (the JSON kept in Redis, read back):
        >>> from aiokafka import TopicPartition as TP
        >>> plan = ReadPlan({TP("r", 0): 40, TP("r", 1): 7}, {TP("r", 0): 100, TP("r", 1): 7})
        >>> record = RunRecord(RunTerms("2026-11", 2, (), "Asia/Shanghai", ("r", "s"), 3), 1765100000000, 1, plan)
        >>> RunRecord.from_json(record.to_json()) == record
        True
        >>> json.loads(record.to_json())["plan"]
        [['r', 0, 40, 100], ['r', 1, 7, 7]]
    """

    terms: RunTerms
    generation: int
    """The namespace's generation (``Fence``): one for the whole run, whichever part counts."""
    by: int
    """The part that began the run: it makes the namespace."""
    plan: ReadPlan
    """The whole month's read plan, every part's partitions."""

    def to_json(self) -> str:
        rows = [[tp.topic, tp.partition, start, self.plan.ends[tp]] for tp, start in self.plan.starts.items()]
        return json.dumps({"terms": asdict(self.terms), "generation": self.generation, "by": self.by, "plan": rows})

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        raw = json.loads(text)
        terms = {key: tuple(value) if isinstance(value, list) else value for key, value in raw["terms"].items()}
        starts = {TopicPartition(topic, partition): start for topic, partition, start, _ in raw["plan"]}
        ends = {TopicPartition(topic, partition): end for topic, partition, _, end in raw["plan"]}
        return cls(RunTerms(**terms), raw["generation"], raw["by"], ReadPlan(starts, ends))


@dataclass(frozen=True)
class PartDone:
    """A part's record that it counted its share, with its ingest totals.

    Example (the JSON kept in Redis, read back):
        >>> stats = IngestStats(read=12, records=12, counted=30, dead_letters=1, dead_letter_reasons=Counter(json=1))
        >>> PartDone.from_json(PartDone(stats, resumed=True).to_json()) == PartDone(stats, resumed=True)
        True
    """

    stats: IngestStats
    resumed: bool
    """The part was run again after it stopped: what it counted before is in Redis, not in ``stats``."""

    def to_json(self) -> str:
        stats = {item.name: getattr(self.stats, item.name) for item in fields(IngestStats)}  # asdict breaks a Counter
        return json.dumps({"stats": stats, "resumed": self.resumed})

    @classmethod
    def from_json(cls, text: str) -> PartDone:
        raw = json.loads(text)
        stats = {**raw["stats"], "dead_letter_reasons": Counter(raw["stats"]["dead_letter_reasons"])}
        return cls(IngestStats(**stats), raw["resumed"])


@dataclass(frozen=True)
class RunState:
    """What the run's hash holds now."""

    record: RunRecord | None
    ready: bool
    done: dict[int, PartDone]
    removing: bool


class Run:
    """A split replay's hash in Redis (see the module docstring), as one part reads and writes it."""

    def __init__(self, redis: Redis | RedisCluster, key: str, part: Part) -> None:
        self._redis = redis
        self.key = key
        self.part = part

    async def state(self) -> RunState:
        raw: dict[str, str] = await self._redis.hgetall(self.key)
        record = raw.get("run")
        done = {int(name[5:]): PartDone.from_json(value) for name, value in raw.items() if name.startswith("done:")}
        return RunState(
            None if record is None else RunRecord.from_json(record), "ready" in raw, done, "removing" in raw
        )

    async def begin(self, record: RunRecord) -> RunState:
        """Record ``record`` unless another part recorded the run first; the state, with whichever record won."""
        await self._redis.hsetnx(self.key, "run", record.to_json())
        return await self.state()

    async def make_ready(self, store: Store, generation: int) -> None:
        """Begin the run's namespace (deleting anything a stale run of the name left), then let the other parts in."""
        await store.begin_rebuild(generation)
        await self._redis.hset(self.key, "ready", "1")

    async def mark_done(self, done: PartDone) -> None:
        await self._redis.hset(self.key, f"done:{self.part.index}", done.to_json())

    async def remove(self, store: Store) -> None:
        """Remove the finished run: closed to parts first, then its namespace, then its record.

        In that order, a removal cut short leaves a run no part joins (its name
        is refused), never a run that would be judged from a namespace in part deleted.
        """
        await self._redis.hset(self.key, "removing", "1")
        await store.remove_all()
        await self._redis.delete(self.key)


def adopted(state: RunState, terms: RunTerms, name: str) -> RunRecord:
    """The run's record, which this part (started with ``terms``) may join; refuses a run being removed, or begun
    with other terms (a part counting another month, or another split, would leave the month short).

    Example:
        >>> terms = RunTerms("2026-11", 2, (), "Asia/Shanghai", ("r", "s"), 1)
        >>> record = RunRecord(terms, 1765100000000, 1, ReadPlan({}, {}))
        >>> adopted(RunState(record, True, {}, False), terms, "nov") == record
        True
        >>> adopted(RunState(record, True, {}, True), terms, "nov")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stream.monthend.parts.RunRefused: run nov is finished and being removed (or its removal was cut short): ...
    """
    record = state.record
    assert record is not None, "a run is adopted once recorded"
    if state.removing:
        raise RunRefused(
            f"run {name} is finished and being removed (or its removal was cut short): choose another --run name"
        )
    differs = record.terms.difference(terms)
    if differs is not None:
        raise RunRefused(
            f"run {name} was begun with {differs}: start every part with the same --month, --part K/N, --app "
            "and settings, or choose another --run name"
        )
    return record


def part_plans(plan: ReadPlan, parts: int) -> list[ReadPlan]:
    """The plan's partitions in ``parts`` parts, balanced by offsets to read, the same on every host.

    :func:`stream.monthend.share.split` leaves out groups left empty; they are
    always the last ones (each partition goes to the first least-loaded
    group), so the parts keep their numbers and the empty ones are added back.
    """
    groups = split(plan, parts)
    return groups + [ReadPlan({}, {})] * (parts - len(groups))


async def resumed(store: Store, plan: ReadPlan) -> ReadPlan:
    """``plan`` from where Redis applied each partition: a part run again reads on from what it counted.

    The least of the shards' applied offsets: a batch that reached some shards
    before the part stopped is completed in the others, and skipped where it
    was applied (the fence), so nothing is counted twice or left out.
    """
    applied = await store.applied_offsets(tp_name(tp) for tp in plan.partitions)
    return ReadPlan(
        {tp: min(plan.ends[tp], max(start, applied[tp_name(tp)].least + 1)) for tp, start in plan.starts.items()},
        plan.ends,
    )


async def joined(
    run: Run, store: Store, terms: RunTerms, generation: int, month_plan: Callable[[], Awaitable[ReadPlan]]
) -> RunRecord:
    """The run's record, once its namespace is ready to count into; the first part to come begins the run.

    The first part records the run (``terms``, ``generation`` and the plan
    ``month_plan`` makes) and makes the namespace; the others adopt that
    record (:func:`adopted`) and wait for the namespace, at most the part's
    timeout. The part that began the run makes the namespace again if it
    stopped before letting the others in: they count nothing before, so
    nothing is lost.
    """
    part = run.part
    state = await run.state()
    if state.record is None:
        state = await run.begin(RunRecord(terms, generation, part.index, await month_plan()))
    record = adopted(state, terms, part.name)
    if record.by == part.index:
        if not state.ready:
            await run.make_ready(store, record.generation)
        return record
    since = time.monotonic()
    while not state.ready:
        if time.monotonic() - since > part.timeout_s:
            raise RunRefused(
                f"part {record.by} began run {part.name} but has not made its namespace in {part.timeout_s:.0f} s: "
                f"run part {record.by} again with --run {part.name}"
            )
        await asyncio.sleep(POLL_S)
        state = await run.state()
    return record


async def wait_for_parts(
    run: Run,
    store: Store,
    plans: Sequence[ReadPlan],
    tick: Callable[[], Awaitable[None]],
    say: Callable[[str], None],
    label: str,
) -> dict[int, PartDone]:
    """Until every part is done (part 0's wait): each part's record, by part.

    Runs ``tick`` (the closer) meanwhile, keeps the partitions of the parts
    done marked idle (read to their end: they must not hold event time back),
    and says which parts it waits for, in lines starting with ``label``. A
    part whose partitions' applied offsets have not moved for the part's
    timeout (never started, or stopped) ends the wait with
    :class:`RunRefused` saying what to do.
    """
    part = run.part
    checks = Every(IDLE_EVERY_S)
    lines = Every(WAITING_LINE_EVERY_S)
    moved: dict[int, tuple[int, float]] = {}  # per part waited for: the offsets it counted, and since when
    said: list[int] = []
    while True:
        state = await run.state()
        left = [k for k in range(part.parts) if k not in state.done]
        if not left:
            return state.done
        now = time.monotonic()
        counted = await _counted(store, {k: plans[k] for k in left})
        for k in left:
            if moved.get(k, (None, now))[0] != counted[k]:
                moved[k] = (counted[k], now)
        stalled = [k for k in left if now - moved[k][1] > part.timeout_s]
        if stalled:
            raise RunRefused(_stalled(part, stalled, counted, [plans[k].total for k in stalled]))
        await mark_read_partitions_idle(store, _union(plans[k] for k in state.done), None)
        if left != said or lines.due():
            said = left
            say(_waiting(label, part, left, sum(counted.values()), sum(plans[k].total for k in left)))
        while not checks.due():
            await tick()
            await asyncio.sleep(POLL_S)


async def _counted(store: Store, plans: Mapping[int, ReadPlan]) -> dict[int, int]:
    """The offsets each part's partitions have applied in Redis (every shard), by part."""
    applied = await store.applied_offsets(tp_name(tp) for plan in plans.values() for tp in plan.partitions)
    return {k: plan.done({tp: applied[tp_name(tp)].least + 1 for tp in plan.partitions}) for k, plan in plans.items()}


def _union(plans: Iterable[ReadPlan]) -> ReadPlan:
    """The partitions of several plans as one plan."""
    starts: dict[TopicPartition, int] = {}
    ends: dict[TopicPartition, int] = {}
    for plan in plans:
        starts |= plan.starts
        ends |= plan.ends
    return ReadPlan(starts, ends)


def _parts(indexes: Sequence[int], parts: int) -> str:
    """Example:
    >>> _parts([1], 2), _parts([1, 3], 4)
    ('part 1 of 2', 'parts 1, 3 of 4')
    """
    return f"part{'s' if len(indexes) > 1 else ''} {', '.join(map(str, indexes))} of {parts}"


def _waiting(label: str, part: Part, left: Sequence[int], counted: int, total: int) -> str:
    """Example:
    >>> _waiting("replay 2026-11 part 0/4", Part("nov", 0, 4), [1, 3], 1_500, 20_000)
    'replay 2026-11 part 0/4 of run nov: waiting for parts 1, 3 of 4 (1,500 of their 20,000 offsets counted)'
    """
    return (
        f"{label} of run {part.name}: waiting for {_parts(left, part.parts)} "
        f"({counted:,} of their {total:,} offsets counted)"
    )


def _stalled(part: Part, stalled: Sequence[int], counted: Mapping[int, int], totals: Sequence[int]) -> str:
    """What part 0 says when parts made no progress for the timeout: which, how far, and what to do.

    Example:
        >>> import textwrap
        >>> print(textwrap.fill(_stalled(Part("nov", 0, 4, 600), [1, 3], {1: 0, 3: 500}, [1_000, 2_000]), 100))
        parts 1, 3 of 4 of run nov made no progress for 600 s (part 1: 0 of 1,000 offsets counted, part 3:
        500 of 2,000): run them again with --run nov (they go on from what they counted), then this part
        again
    """
    far = ", ".join(
        f"part {k}: {counted[k]:,} of {total:,}" + (" offsets counted" if i == 0 else "")
        for i, (k, total) in enumerate(zip(stalled, totals, strict=True))
    )
    them, they = ("them", "they") if len(stalled) > 1 else ("it", "it")
    return (
        f"{_parts(stalled, part.parts)} of run {part.name} made no progress for {part.timeout_s:.0f} s ({far}): "
        f"run {them} again with --run {part.name} ({they} go{'es' if they == 'it' else ''} on from what "
        f"{they} counted), then this part again"
    )
