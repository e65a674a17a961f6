"""Scale-out: two workers in one group share the partitions; one is killed mid-stream and the other takes over.

Two hours of traffic for three apps (no successes later than the grace
period, so no slot ever needs a second revision) are produced over some ten
seconds into 4-partition topics while two workers of one group consume them.
Once both hold input partitions, the first worker is killed with SIGKILL
half way through; the survivor takes its partitions over. At the end the
counts are exact and every slot was closed once: revision 1 in Redis, and on
the verdicts topic each key has revision 1 and nothing else (a repeated
message, if any, identical).
"""

from __future__ import annotations

import re
import time

from stream_harness import (
    FLUSH_APP,
    INPUT_PARTITIONS,
    Truth,
    assert_slots_match_truth,
    assert_topic_matches_redis,
    batched_records,
    hours_ago,
    idle_lag_before,
    simulated_traffic,
)

pytest_plugins = ["stream_harness"]

APPS = ("1400000001", "1400000002", "1400000003")
CHUNKS = 30


def input_partitions_held(log: str, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the worker's last assignment as Faust logs it; None before any assignment.

    Faust logs an empty assignment on one line ("... partitions set() for group")
    and a non-empty one as a table with a row "| topic | {0, 2} |" (runs as "{2-3}").
    """
    assignments = log.split("Setting newly assigned partitions")
    if len(assignments) < 2:
        return None
    row = re.search(rf"\| {re.escape(topic)} +\| \{{([0-9, -]+)\}}", assignments[-1])
    if not row:
        return set()
    held: set[int] = set()
    for item in row.group(1).split(","):  # "0, 2" or a run "2-3"
        first, _, last = item.strip().partition("-")
        held.update(range(int(first), int(last or first) + 1))
    return held


def holds_input_partitions(log: str, topic: str) -> bool:
    """Whether the worker's last assignment (as Faust logs it) includes partitions of ``topic``."""
    return bool(input_partitions_held(log, topic))


def group_shares_all_partitions(logs: list[str], topic: str, partitions: int) -> bool:
    """Whether every worker has been assigned and their last assignments split ``topic`` exactly between them.

    Faust's sticky assignor may leave a worker idle (4 partitions, 3 workers:
    2 + 2 + 0 after a late join), so this asks for a settled group, not a busy
    worker each.
    """
    held = [input_partitions_held(log, topic) for log in logs]
    if any(h is None for h in held):
        return False
    return sum(len(h) for h in held) == partitions and set().union(*held) == set(range(partitions))


def test_stream_scale_out(stream_deployment):
    start = hours_ago(28)
    plan, events = simulated_traffic(
        APPS,
        start,
        120,
        incidents=[(30, 50, 0.9, APPS[0])],
        peak_per_minute=150,
        seed=31,
        trough_share=1.0,
        duplicate_rate=0.01,
        late_success_rate=0.0,
    )
    records = batched_records(events, batch=10, single_every=3)
    d = stream_deployment(grace_seconds=30, idle_lag_seconds=idle_lag_before(start - 3_600_000))

    first, second = d.start_worker(), d.start_worker()
    for worker in (first, second):
        d.wait_for(
            f"{worker.name} to hold input partitions",
            lambda w=worker: holds_input_partitions(w.tail(400), d.topics.requests),
            60,
        )
    for i in range(CHUNKS):
        d.produce(records[i * len(records) // CHUNKS : (i + 1) * len(records) // CHUNKS])
        if i == CHUNKS // 2:
            first.kill()  # half the stream is still to come
        time.sleep(0.3)
    assert second.alive
    d.wait_settled(timeout_s=120, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert holds_input_partitions(second.tail(5000), d.topics.requests)

    truth = Truth.of(events, d.settings)
    assert_slots_match_truth(d, truth, ignore_apps=[FLUSH_APP])
    verdicts = d.verdict_table()
    assert {v["revision"] for v in verdicts.values()} == {"1"}, "a slot was closed more than once"
    assert any(v["unavailable"] == "1" for v in verdicts.values())
    latest = assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
    assert {m["revision"] for key, m in latest.items() if not key.startswith(FLUSH_APP)} == {1}
    messages = [r for r in d.read_topic("verdicts") if not (r.key or "").startswith(FLUSH_APP)]
    repeated = len(messages) - len(latest)
    assert repeated <= 5, f"{repeated} verdicts were published more than once"


def test_killing_one_of_three_workers_resumes_verdicts_within_15_seconds(stream_deployment):
    """The leader of three workers (it counts partitions and runs the closer) is killed mid-stream.

    Event time runs some two minutes per half second of production, so a slot
    is due about every second; the gap in verdicts after the kill is the
    failover time: the session timeout, the rebalance, the closer's lease.
    """
    start = hours_ago(30)
    plan, events = simulated_traffic(
        APPS, start, 120, peak_per_minute=60, seed=37, trough_share=1.0, late_success_rate=0.0
    )
    records = batched_records(events, batch=10)
    d = stream_deployment(grace_seconds=0, idle_lag_seconds=idle_lag_before(start - 3_600_000))
    workers = [d.start_worker() for _ in range(3)]
    d.wait_for(
        "the three workers to share the input partitions",
        lambda: group_shares_all_partitions([w.tail(400) for w in workers], d.topics.requests, INPUT_PARTITIONS),
        90,
    )
    chunks, kill_at = 60, 20
    verdict_times: list[float] = []
    killed_at = 0.0
    for i in range(chunks):
        d.produce(records[i * len(records) // chunks : (i + 1) * len(records) // chunks])
        if i == kill_at:
            d.wait_for("a worker to close a slot", lambda: any("closed " in w.tail(2000) for w in workers), 60)
            leader = next(w for w in workers if "closed " in w.tail(2000))
            leader.kill()
            killed_at = time.monotonic()
            count_at_kill = len(d.verdict_keys())
        if killed_at:
            if len(d.verdict_keys()) > count_at_kill and not verdict_times:
                verdict_times.append(time.monotonic())
        time.sleep(0.5)
    d.wait_for("verdicts after the kill", lambda: len(d.verdict_keys()) > count_at_kill, 60)
    resumed_after = (verdict_times[0] if verdict_times else time.monotonic()) - killed_at
    print(f"verdicts resumed {resumed_after:.1f} s after the leader was killed")
    assert resumed_after < 15, f"verdicts resumed only {resumed_after:.1f} s after the kill"
    d.wait_settled(timeout_s=120, still_open=d.flush_stream_time(plan.end_ms + 3_600_000))
    assert_slots_match_truth(d, Truth.of(events, d.settings), ignore_apps=[FLUSH_APP])
    assert_topic_matches_redis(d, ignore_apps=[FLUSH_APP])
