"""Quix Streams doing the worker's counting: a peer for `make bench`, run in its own venv (`make bench-venv`).

What it measures: the seconds from the first input record this process handles
to the moment every one of the ``--events`` expected events has been added to a
5-minute window, then it stops the application cleanly (the last checkpoint
commits its offsets, state and changelogs) and prints one JSON line on stdout::

    {"seconds": 1.5, "events": 100000, "late": 0, "counts": {"request|1400000001|1552183200000": 412, ...}}

``counts`` holds the final count per ``kind|app_id|window start (epoch ms)``, so
a caller can check it against the truth; ``late`` is how many events Quix
dropped as too late for their window (see below). Everything else goes to
stderr. Exits 1 with one line on stderr when the events were not all seen
within ``--timeout-s``.

Run (the bench creates the input topics and removes what Quix leaves behind)::

    .venv-bench/bin/python bench/quix_peer.py --bootstrap 127.0.0.1:9092 \\
        --requests T.requests --successes T.successes --events 500000 --group G --state-dir DIR

It imports nothing of the ``stream`` package (standard library and quixstreams
only) and is what a Python user of Quix Streams would write for the job: each
input topic gets its own StreamingDataFrame that expands a record (one event,
or a JSON array of events) into events, sets each event's timestamp to its
counted time (a success's ``request_ts`` when present, else ``ts``), re-keys by
``app_id`` with ``group_by`` (the records are keyed by room, so Quix
repartitions through an internal topic), and counts a tumbling 5-minute event-time
window per app, emitting every update (``.current()``). One dataframe per topic
rather than one over both keyed by (kind, app): it is the shape Quix's
documentation uses, needs no ``concat`` and no composite key, and keeps each
kind's windows, clock and late-dropping to its own events.

Where Quix does differently from our worker:

- No duplicate removal: an event delivered twice counts twice (the worker keeps
  the event ids of each slot and counts each once).
- At-least-once (Quix's default, commit every 5 s): after a crash the records
  since the last checkpoint are counted again, in the windows and through the
  repartition topic.
- Late events are dropped: a window closes once the app's latest event time
  (per key, Quix's default closing strategy) passes its end plus ``--grace-ms``,
  and an event for a closed window is dropped (counted here as ``late``). The
  worker counts a late event in its slot whatever its lateness and publishes a
  revised verdict. Reading a backlog, Quix sees the input partitions' records
  interleaved in the repartition topic in no time order, so a grace of minutes
  drops events; the default grace here is a day, so that a backlog counts whole.
- State is RocksDB in ``--state-dir`` backed by a changelog topic per window
  store (Quix's default), not Redis; nothing is published when a window closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame

SLOT = timedelta(minutes=5)
DEFAULT_GRACE_MS = 24 * 3_600_000

log = logging.getLogger("quix_peer")


@dataclass
class Progress:
    """What the pipelines have done so far: the first record's time, events added to windows, windows' counts."""

    expected: int
    on_done: Callable[[], None] = lambda: None
    started: float | None = None
    finished: float | None = None
    added: int = 0
    late: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.added + self.late >= self.expected

    def record_seen(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def window_updated(self, kind: str, app_id: str, window: dict[str, Any]) -> None:
        """One event added to a window: keep the window's count, and stop once every event is accounted for."""
        self.counts[f"{kind}|{app_id}|{window['start']}"] = window["value"]
        self.added += 1
        self._check_done()

    def event_late(self) -> None:
        self.late += 1
        self._check_done()

    def _check_done(self) -> None:
        if self.finished is None and self.done:
            self.finished = time.perf_counter()
            self.on_done()


def counted_time(kind: str, event: dict[str, Any]) -> int:
    """The time that places an event: a success's request time when it has one, else its own."""
    if kind == "success" and event.get("request_ts") is not None:
        return event["request_ts"]
    return event["ts"]


def count_kind(app: Application, topic_name: str, kind: str, grace_ms: int, progress: Progress) -> StreamingDataFrame:
    """The pipeline of one input topic: records to events, event time, by app, a 5-minute count per window."""

    def events_of(value: Any) -> list[dict[str, Any]]:
        progress.record_seen()
        return value if isinstance(value, list) else [value]

    def on_late(*_: Any) -> bool:
        progress.event_late()
        return False  # counted and reported once at the end, not logged per event

    sdf = app.dataframe(app.topic(topic_name, value_deserializer="json"))
    sdf = sdf.apply(events_of, expand=True)
    sdf = sdf.set_timestamp(lambda event, _key, _ts, _headers: counted_time(kind, event))
    sdf = sdf.group_by("app_id")
    sdf = sdf.tumbling_window(SLOT, grace_ms=grace_ms, on_late=on_late).count().current()
    updated = progress.window_updated
    return sdf.update(lambda window, app_id, _ts, _headers: updated(kind, app_id, window), metadata=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, HOST:PORT")
    parser.add_argument("--requests", required=True, help="the requests topic")
    parser.add_argument("--successes", required=True, help="the successes topic")
    parser.add_argument("--events", type=int, required=True, help="events expected over both topics")
    parser.add_argument("--group", required=True, help="consumer group; also names Quix's internal topics")
    parser.add_argument("--state-dir", required=True, help="directory of Quix's RocksDB state")
    parser.add_argument("--timeout-s", type=float, default=900, help="give up after this long (default 900)")
    parser.add_argument(
        "--grace-ms",
        type=int,
        default=DEFAULT_GRACE_MS,
        help=f"window grace period; later events are dropped (default {DEFAULT_GRACE_MS:,}: a day)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s quix_peer %(message)s")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
    )
    progress = Progress(expected=args.events, on_done=app.stop)
    for topic_name, kind in ((args.requests, "request"), (args.successes, "success")):
        count_kind(app, topic_name, kind, args.grace_ms, progress)

    timed_out = False

    def give_up(_signum: int, _frame: FrameType | None) -> None:
        nonlocal timed_out
        timed_out = True
        app.stop()

    signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, args.timeout_s)
    app.run()
    signal.setitimer(signal.ITIMER_REAL, 0)

    if progress.finished is None or progress.started is None:
        reason = f"timed out after {args.timeout_s:g} s" if timed_out else "stopped"
        print(
            f"quix_peer: {reason} with {progress.added:,} of {args.events:,} events counted ({progress.late:,} late)",
            file=sys.stderr,
        )
        return 1
    if progress.late:
        log.warning("%d events dropped as later than the %d ms grace; counts miss them", progress.late, args.grace_ms)
    seconds = progress.finished - progress.started
    log.info("%d events in %.2f s (%.0f events/s)", progress.added, seconds, progress.added / seconds)
    print(json.dumps({"seconds": seconds, "events": progress.added, "late": progress.late, "counts": progress.counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
