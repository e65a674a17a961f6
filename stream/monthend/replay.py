"""``sla-stream replay``: a month's figures counted again from the raw events on Kafka, the same every time.

When the two sides' records disagree, the provider's records decide, so
every month's figures must be reproducible from the raw events. A replay:

1. finds, in each input partition, the first record stamped at or after the
   month's start less a margin (``[replay] margin_minutes`` plus
   ``[events] max_future_seconds``: records sent a little before their
   events' time), and refuses a month the topics no longer reach back to,
   and topics that hold no record at all;
2. reads every partition from there to the end offsets it saw when it
   started, with a consumer of its own (no group, nothing committed), and
   counts the events whose counted time falls in the month (and, with
   ``--app``, of those apps) through the workers' own
   :class:`stream.live.ingest.Ingester`, into a namespace of its own in Redis
   (key prefix ``<prefix>-replay-YYYY-MM-<token>:``), so the live state is
   never touched and live workers run on; a reading that met no event of the
   month, of any app, is refused (no data must not pass for no traffic);
3. closes the slots with the workers' own :class:`stream.live.closer.Closer`
   as event time passes (so duplicate-detection ids are released as live,
   and memory stays flat), and every slot once the reading is done; the
   exemptions of the topic and the settings apply as they do live;
4. builds each service month's statement from every slot it counted, as the
   live pages do (:func:`stream.live.ledger.statements_from_store`), and removes its namespace
   (``--keep`` leaves it for inspection).

Split across hosts (``--part K/N --run NAME``), each part counts its share of
the partitions into the run's namespace, named by the run, not a random
token; part 0 also closes, waits for the other parts and does step 4
(:mod:`stream.monthend.parts`).

Nothing is sent anywhere: the verdicts and dead letters the replay makes
are counted, not published (the live workers published them already).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.queues
import queue
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from stream.config import Settings
from stream.kafka_security import aiokafka_options, redact
from stream.live.clock import ClockTiming
from stream.live.closer import Closer
from stream.live.exemptions import current_exemptions
from stream.live.ingest import IngestStats
from stream.live.ledger import statements_from_store
from stream.live.recount import (
    Every,
    ReadPlan,
    RecountError,
    close_all,
    load_exemptions,
    mark_read_partitions_idle,
    open_consumer,
    read_exemptions_topic,
    topic_partitions,
    tp_name,
    whole_topic_plan,
)
from stream.live.store import Fence, Fenced, RolledBack, Store, redis_client
from stream.monthend.apps import UnknownApp, check_apps_known
from stream.monthend.parts import Part, PartDone, Run, RunRefused, RunTerms, joined, part_plans, resumed, wait_for_parts
from stream.monthend.progress import ReadProgress
from stream.monthend.share import IDLE_EVERY_S, POLL_S, Share, ShareOutcome, merged, run_share, split
from stream.sla.months import begun_by, calendar_month, service_months_in
from stream.sla.slots import local_time
from stream.statements.statement import Statement


class ReplayError(Exception):
    """Why a replay cannot run or stopped; printed as one line."""


@dataclass(frozen=True)
class ReplayRequest:
    year: int
    month: int
    apps: tuple[str, ...] = ()
    """Only these apps (empty: every app with events in the month or terms on record)."""
    keep: bool = False
    """Leave the replay's namespace in Redis afterwards (for inspection)."""
    part: Part | None = None
    """Count only this part of a replay split across hosts (None: the whole month here)."""

    @property
    def name(self) -> str:
        return f"{self.year}-{self.month:02d}"

    @property
    def label(self) -> str:
        """What the progress lines call this replay."""
        return f"replay {self.name}" + ("" if self.part is None else f" {self.part.label}")


@dataclass
class ReplayResult:
    """What the replay read, and how many statements it gave (to ``emit``, as each was built)."""

    statements: int
    stats: IngestStats
    offsets: int
    seconds: float
    exemptions: int
    prefix: str
    kept: bool
    slots_closed: int = 0
    part: Part | None = None
    """The part of a split replay this was (None: the whole month here)."""
    resumed: tuple[int, ...] = ()
    """The parts run again after they stopped: what they counted before is in the figures, not in ``stats``."""

    @property
    def judged(self) -> bool:
        """Whether this replay judged the month (``statements``); the other parts of a split replay only count."""
        return self.part is None or self.part.index == 0

    def line(self, name: str) -> str:
        s = self.stats
        if not self.judged:
            assert self.part is not None
            return (
                f"replay {name} {self.part.label} of run {self.part.name}: its share counted "
                f"({self.offsets:,} offsets, {s.records:,} records, {s.counted:,} events counted); part 0 prints the "
                "month's statements once every part is counted"
            )
        rate = s.counted / self.seconds if self.seconds else 0.0
        kept = f"; its state is kept under key prefix {self.prefix!r}" if self.kept else ""
        split = ""
        if self.part is not None:
            split = f"; counted in {self.part.parts} part{'s' if self.part.parts > 1 else ''} (run {self.part.name})"
        if self.resumed:
            split += (
                f", part{'s' if len(self.resumed) > 1 else ''} {', '.join(map(str, self.resumed))} run again after "
                "stopping: what was counted before is in the figures, not in these totals"
            )
        return (
            f"replayed {name} in {self.seconds:.1f} s: {self.offsets:,} offsets, {s.records:,} records, "
            f"{s.counted:,} events counted ({rate:,.0f}/s), {s.duplicates:,} duplicates counted once, "
            f"{s.skipped:,} events outside the month or apps, {s.dead_letters:,} refused (dead-lettered when live), "
            f"{self.exemptions} exemptions from the topic, {self.slots_closed:,} slots closed{split}{kept}"
        )


ProgressFactory = Callable[[str, int], ReadProgress]
"""Makes the display of a read: its label and total offsets."""
Emit = Callable[[Statement], None]
"""Takes each of the month's statements as it is built (and writes it out): one app's slots are held at a time."""


async def replay(
    settings: Settings,
    request: ReplayRequest,
    progress: ProgressFactory,
    say: Callable[[str], None],
    emit: Emit,
    processes: int = 1,
    clock: Callable[[], float] = time.time,
) -> ReplayResult:
    """Count ``request``'s month again from the topics; see the module docstring.

    With ``request.part``, only that part of the partitions is counted, into
    the run's namespace; part 0 then waits for the others (``say`` tells
    which) and judges the month, and the others return once they counted
    (their result is not :attr:`ReplayResult.judged`).
    """
    started = time.monotonic()
    tz = settings.policy.timezone
    month_start, month_end = calendar_month(request.year, request.month).span_ms(tz)
    now_ms = int(clock() * 1000)
    if month_start > now_ms:
        raise ReplayError(f"{request.name} has not begun: it starts {_when(month_start, settings)}")
    topics = settings.topics
    try:
        counts = topic_partitions(settings)
    except RecountError as error:
        raise ReplayError(str(error)) from None
    part = request.part
    redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
    prefix = (
        replay_prefix(settings.key_prefix, request, secrets.token_hex(4))
        if part is None
        else run_prefix(settings.key_prefix, request, part.name)
    )
    store = Store.of(redis, settings, prefix)
    run = None if part is None else Run(redis, run_record_key(settings.key_prefix, part.name), part)
    # A split run's namespace goes only once every part counted: until then, a part run again goes on from it.
    removable = run is None
    try:
        try:
            await redis.ping()
        except RedisError as error:
            raise ReplayError(redact(f"Redis at {settings.redis_url} is not answering: {error}")) from None
        live = Store.of(redis, settings)
        await check_apps_known(settings, live, request.apps)
        partitions = [TopicPartition(topic, p) for topic in settings.topics.input_kinds for p in range(counts[topic])]
        consumer = await open_consumer(settings, aiokafka_options(settings.kafka_security))
        try:
            reading_from = month_start - settings.replay_margin_ms - settings.max_future_ms

            def month_plan() -> Awaitable[ReadPlan]:
                return _month_plan(consumer, partitions, reading_from, now_ms, settings, request)

            if run is None:
                plan, fence = await month_plan(), Fence(now_ms, "rebuilding")
            else:
                record = await joined(run, store, _terms(settings, request, run.part), now_ms, month_plan)
                plan, fence = record.plan, Fence(record.generation, "rebuilding")
            judges = run is None or run.part.index == 0
            latest = await read_exemptions_topic(consumer, settings, counts[topics.exemptions]) if judges else {}
        finally:
            await consumer.stop()
        if run is None:
            await store.begin_rebuild(fence.generation)
        exemptions = await load_exemptions(store, latest)
        closer = Closer(store, settings, [tp_name(tp) for tp in plan.partitions], _not_published) if judges else None
        month = (month_start, month_end)

        def count(share: ReadPlan) -> Awaitable[tuple[IngestStats, int]]:
            return _count(settings, request, store, fence, share, progress, month, processes, closer)

        resumed_parts: tuple[int, ...] = ()
        if run is None:
            stats, closed = await count(plan)
        else:
            plans = part_plans(plan, run.part.parts)
            done, closed = await _count_part(run, plans, store, fence, closer, count, say, request.label)
            stats = merged([d.stats for d in done.values()])
            resumed_parts = tuple(k for k, d in sorted(done.items()) if d.resumed)
            if closer is None:
                seconds = time.monotonic() - started
                return ReplayResult(0, stats, plans[run.part.index].total, seconds, 0, store.prefix, True, part=part)
        assert closer is not None
        closed += await close_all(closer, fence, store, plan)
        removable = True
        covered = await store.coverage(request.name, month_start, month_end)
        if next(covered.minutes(), None) is None:  # no data must not pass for a clean month (no traffic)
            read = _nothing_of_the(request.name, stats, plan, _when(reading_from, settings))
            kept = f"; its state is kept under key prefix {store.prefix!r}" if request.keep else ""
            raise ReplayError(_no_records(settings, request, read) + kept)
        await _check_month_closed(store, month, settings, now_ms)
        counted_apps = await store.apps()
        await check_apps_known(settings, live, request.apps, seen=counted_apps)
        app_ids = list(request.apps) or sorted(counted_apps | set(settings.apps))
        current = await current_exemptions(store, settings)
        maps = {request.name: covered}
        emitted = 0
        for app_id in app_ids:
            months = service_months_in(request.year, request.month, settings.terms(app_id).subscriptions)
            for statement in await statements_from_store(
                store, settings, app_id, begun_by(months, tz, now_ms), current, "replay", now_ms, maps
            ):
                emit(statement)
                emitted += 1
        seconds = time.monotonic() - started
        return ReplayResult(
            emitted, stats, plan.total, seconds, exemptions, store.prefix, request.keep, closed, part, resumed_parts
        )
    except KafkaError as error:
        raise ReplayError(redact(f"Kafka at {settings.kafka_bootstrap} failed during the replay: {error}")) from None
    except RedisError as error:
        raise ReplayError(redact(f"Redis at {settings.redis_url} failed during the replay: {error}")) from None
    except (Fenced, RolledBack):
        raise ReplayError(
            "a reset of Redis (or another replay) took the replay's namespace over; run it again"
        ) from None
    except (RecountError, UnknownApp, RunRefused) as error:
        raise ReplayError(str(error)) from None
    finally:
        try:
            if removable and not request.keep:
                with contextlib.suppress(RedisError, OSError):  # Redis gone: the error above says so already
                    if run is None:
                        await store.remove_all()
                    else:
                        await run.remove(store)
        finally:
            await redis.aclose()


def _terms(settings: Settings, request: ReplayRequest, part: Part) -> RunTerms:
    """What every part of ``part``'s run must agree on (:class:`stream.monthend.parts.RunTerms`)."""
    return RunTerms(
        request.name,
        part.parts,
        tuple(sorted(request.apps)),
        settings.policy.timezone.key,
        tuple(settings.topics.input_kinds),
        settings.redis_shards,
    )


async def _count_part(
    run: Run,
    plans: Sequence[ReadPlan],
    store: Store,
    fence: Fence,
    closer: Closer | None,
    count: Callable[[ReadPlan], Awaitable[tuple[IngestStats, int]]],
    say: Callable[[str], None],
    label: str,
) -> tuple[dict[int, PartDone], int]:
    """Count this part's share (``plans``: every part's) with ``count``, unless it was counted already; record it done.

    A part run again after it stopped reads on from the offsets Redis applied.
    Part 0 (``closer`` given) then waits for every other part, closing meanwhile.
    Returns the parts' records (this part's alone when it is not part 0) and how many slots were closed.
    """
    index = run.part.index
    state = await run.state()
    closed = 0
    if index in state.done:
        mine = state.done[index]
    else:
        whole = plans[index]
        share = await resumed(store, whole)
        stats, closed = await count(share)
        mine = PartDone(stats, resumed=share.starts != whole.starts)
        await run.mark_done(mine)
    if closer is None:
        return {index: mine}, closed

    async def tick() -> None:
        nonlocal closed
        closed += (await closer.tick(fence, ledgers=False)).closed

    return await wait_for_parts(run, store, plans, tick, say, label), closed


def replay_prefix(live_prefix: str, request: ReplayRequest, token: str) -> str:
    """The replay's own key prefix: never inside the live namespace, so nothing live can read or delete it.

    Example:
        >>> replay_prefix("sla:", ReplayRequest(2026, 10), "ab12")
        'sla-replay-2026-10-ab12:'
        >>> replay_prefix("sla", ReplayRequest(2026, 10), "ab12")
        '~sla-replay-2026-10-ab12:'
        >>> replay_prefix("~", ReplayRequest(2026, 10), "ab12")
        '^~-replay-2026-10-ab12:'
    """
    return _beside_live(live_prefix, f"{request.name}-{token}:")


def run_prefix(live_prefix: str, request: ReplayRequest, name: str) -> str:
    """The key prefix of the split replay ``name`` of ``request``'s month: shared by its parts, and never a
    one-host replay's (a hex token), which the run's first part would otherwise empty when it begins.

    Example:
        >>> run_prefix("sla:", ReplayRequest(2026, 10), "oct-close")
        'sla-replay-2026-10-run-oct-close:'
    """
    return replay_prefix(live_prefix, request, f"run-{name}")


def run_record_key(live_prefix: str, name: str) -> str:
    """The key of the record of the replay split across hosts named ``name`` (:mod:`stream.monthend.parts`).

    Named by the run alone, whatever the month (a part given another month is
    refused), and outside the run's namespace, which its first part empties.

    Example:
        >>> run_record_key("sla:", "nov-close")
        'sla-replay-run-nov-close'
    """
    return _beside_live(live_prefix, f"run-{name}")


def _beside_live(live_prefix: str, rest: str) -> str:
    """``<live prefix>-replay-<rest>``, never inside the live namespace, so nothing live can read or delete it."""
    prefix = f"{live_prefix.rstrip(':')}-replay-{rest}"
    if prefix.startswith(live_prefix):  # a live prefix without a separator ("sla"): lead with another character
        prefix = ("~" if live_prefix[0] != "~" else "^") + prefix
    return prefix


async def _month_plan(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    reading_from: int,
    now_ms: int,
    settings: Settings,
    request: ReplayRequest,
) -> ReadPlan:
    """From the first record stamped at or after ``reading_from`` to the end offsets as of now, per partition.

    Refuses when a partition has lost records (retention, deletion) that may
    have been stamped after ``reading_from``: the month cannot be counted whole.
    """
    whole = await whole_topic_plan(consumer, partitions)
    if whole.total == 0:  # just created, or every record deleted: nothing to count, and nothing running again finds
        deleted = sum(whole.starts.values())
        held = f"all {deleted:,} offsets they held were deleted, by retention or deleteRecords" if deleted else None
        raise ReplayError(_no_records(settings, request, f"they hold none ({held or 'never written to'})"))
    emptied = [tp for tp in partitions if 0 < whole.starts[tp] == whole.ends[tp]]
    if emptied:
        tp = emptied[0]
        raise ReplayError(
            f"topic {tp.topic} (partition {tp.partition}) has no records left (offsets below {whole.starts[tp]:,} "
            f"were deleted): it cannot tell how far back it reached, so {request.name} cannot be counted whole"
        )
    found = await consumer.offsets_for_times({tp: reading_from for tp in partitions})
    # No record found is read whole: Kafka answers none when records were deleted from the middle of a batch,
    # and a partition skipped by mistake would be a silent undercount; the month filter keeps the count exact.
    starts = {tp: whole.starts[tp] if found[tp] is None else found[tp].offset for tp in partitions}
    for tp in partitions:
        if whole.starts[tp] == 0 or starts[tp] > whole.starts[tp]:
            continue  # nothing was ever deleted, or a record older than the month's start is still there
        reach = await _oldest_record_time(consumer, tp, whole)
        if reach > reading_from:
            raise ReplayError(
                f"topic {tp.topic} (partition {tp.partition}) reaches back only to {_when(reach, settings)}, "
                f"but replaying {request.name} needs its records from {_when(reading_from, settings)} on "
                f"(the topics keep {settings.retention_ms // 86_400_000} days)"
            )
    return ReadPlan(starts, whole.ends)


async def _oldest_record_time(consumer: AIOKafkaConsumer, tp: TopicPartition, whole: ReadPlan) -> int:
    """The timestamp of a partition's oldest retained record, read (the time index can miss records that share a
    batch with deleted ones); refuses when none can be read."""
    consumer.assign([tp])
    consumer.seek(tp, whole.starts[tp])
    fetched = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
    records = fetched.get(tp, [])
    if not records:
        raise ReplayError(
            f"cannot read the oldest record of topic {tp.topic} (partition {tp.partition}) to see how far back it "
            "reaches (an open transaction, or Kafka slow to answer); run it again"
        )
    return records[0].timestamp


async def _count(
    settings: Settings,
    request: ReplayRequest,
    store: Store,
    fence: Fence,
    plan: ReadPlan,
    progress: ProgressFactory,
    month: tuple[int, int],
    processes: int,
    closer: Closer | None,
) -> tuple[IngestStats, int]:
    """Count the plan's records of the month in ``processes`` processes, running ``closer`` as event time passes.

    The processes count; this one shows their progress, notices one that
    failed or died, and runs the closer meanwhile (None: another part of a
    split replay closes). Returns the merged ingest totals and how many slots were closed.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process holding event loops and sockets
    outcomes: multiprocessing.queues.Queue[ShareOutcome] = context.Queue()
    groups = split(plan, processes)
    counters = [(context.Value("q", 0, lock=False), context.Value("q", 0, lock=False)) for _ in groups]
    apps = frozenset(request.apps)
    shown = progress(request.label, plan.total)
    idle_reports = Every(IDLE_EVERY_S)
    finished: dict[int, IngestStats] = {}
    closed = 0
    workers = []
    try:
        for index, (group, (offsets_done, events_counted)) in enumerate(zip(groups, counters, strict=True)):
            share = Share(settings, store.prefix, fence.generation, group, month, apps)
            worker = context.Process(
                target=run_share, args=(index, share, offsets_done, events_counted, outcomes), daemon=True
            )
            worker.start()
            workers.append(worker)
        while len(finished) < len(workers):
            await asyncio.sleep(POLL_S)
            shown.update(sum(o.value for o, _ in counters), sum(e.value for _, e in counters))
            ended = [i for i, w in enumerate(workers) if i not in finished and not w.is_alive()]
            for outcome in _drain(outcomes):  # after looking at who ended: an ended process's outcome is sent
                if outcome.stats is None:
                    raise ReplayError(outcome.error or "a replay process failed")
                finished[outcome.index] = outcome.stats
            lost = [i for i in ended if i not in finished]
            if lost:
                raise ReplayError(_lost_process(workers[lost[0]].exitcode))
            if idle_reports.due():
                for index in finished:  # a finished process no longer reports its partitions idle
                    await mark_read_partitions_idle(store, groups[index], None)
            # The closer keeps up with the reading: slots close, and their ids are released, as event time
            # passes, so Redis holds about an hour of ids (dedup_hold) however large the month.
            if closer is not None:
                closed += (await closer.tick(fence, ledgers=False)).closed
    finally:
        shown.close()
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return merged(list(finished.values())), closed


async def _not_published(messages: Sequence[tuple[str, str]]) -> None:
    """Verdicts of a replay are its own: the live workers publish theirs."""


def _lost_process(code: int | None) -> str:
    """Why the replay stopped when one of its processes ended without sending its outcome.

    Killed by a signal (the out-of-memory killer, an operator), running it again
    can help; an exit status of its own is a fault that would happen again.

    Example:
        >>> _lost_process(-9)
        'a replay process ended without its counts (exit status -9), killed by SIGKILL (out of memory?); run it again'
        >>> _lost_process(1)
        'a replay process ended without its counts (exit status 1): a fault in sla-stream, please report it'
    """
    message = f"a replay process ended without its counts (exit status {code})"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"{message}, killed by {signal.Signals(-code).name} (out of memory?); run it again"
        return f"{message}, killed by signal {-code}; run it again"
    return f"{message}: a fault in sla-stream, please report it"


def _no_records(settings: Settings, request: ReplayRequest, why: str) -> str:
    """The refusal of a month the input topics hold no record of: counted, it would read as a clean month."""
    return f"no records for {request.name} in topics {', '.join(settings.topics.input_kinds)}: {why}"


def _nothing_of_the(month: str, stats: IngestStats, plan: ReadPlan, since: str) -> str:
    """What a reading that met no event of the month read instead."""
    read = f"every record stamped from {since} on"
    if not stats.records:
        return f"the {plan.total:,} offsets read ({read}) hold no committed record"
    refused = f" ({stats.dead_letters:,} refused as invalid)" if stats.dead_letters else ""
    return f"none of the {stats.records:,} records read ({read}) has an event in {month}{refused}"


async def _check_month_closed(store: Store, month: tuple[int, int], settings: Settings, started_ms: int) -> None:
    """Every slot of the month due when the replay started is closed: an open one would count as available."""
    timing = ClockTiming.of(settings)
    month_start, month_end = month
    before = min(month_end, timing.due_before(started_ms - timing.idle_lag_ms))
    left = [(app, slot) for app, slot in await store.slots_to_close(before, 10) if slot >= month_start]
    if left:
        app, slot = left[0]
        raise ReplayError(f"slot {_when(slot, settings)} of app {app} is still open after the replay; run it again")


def _drain(outcomes: multiprocessing.queues.Queue[ShareOutcome]) -> list[ShareOutcome]:
    """The outcomes the processes have sent so far."""
    found = []
    while True:
        try:
            found.append(outcomes.get_nowait())
        except queue.Empty:
            return found


def _when(ms: int, settings: Settings) -> str:
    return local_time(ms, settings.policy.timezone).isoformat(timespec="minutes")
