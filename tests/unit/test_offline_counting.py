"""The offline report's bounded counting (stream/offline) against the old one, a ``SlotTally`` of every id.

The oracle (tests/offline_oracle.py) is the report's counting before the
change, word for word: every figure, every skipped line's text and order,
the duplicates and the events outside the month must come out the same,
also when the memory budget is so small that the spill has many partitions
and each is split again, when the files are cut into many pieces read by two
processes, and when blocks end in the middle of lines. The coverage (the
minutes of the month with a valid event) is checked against the minutes of
the events the oracle's rules find valid, in the same cases.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from offline_oracle import slot_tally_count

from stream.events import InvalidEvent, RequestEvent, SuccessEvent, TimeBounds, parse_line, to_line, to_record
from stream.offline import counting, files
from stream.offline.counting import BadLine, CountedEvents, count_event_files
from stream.offline.files import EventFilesError, event_files
from stream.sla.coverage import MINUTE_MS, MinuteMap
from stream.sla.months import calendar_month
from stream.tools.simulate import TrafficPlan, generate

if TYPE_CHECKING:
    from conftest import CliRun

SHANGHAI = ZoneInfo("Asia/Shanghai")
MARCH = calendar_month(2019, 3).span_ms(SHANGHAI)  # 2019-03-01T00:00+08:00 to 2019-04-01T00:00+08:00
BOUNDS = TimeBounds(946_684_800_000, 1_800_000_000_000)
MONTH_END = MARCH[1]
APP = "1400000001"

FIELDS = '"app_id": "1400000001", "room_id": "r", "user_id": "u"'
ODD_LINES = [
    "",
    "   ",
    "\r",
    "\x0b\x1c",  # whitespace to str.strip: a blank line, skipped without a word
    "\u0085\u00a0",
    "not json",
    "[1, 2]",
    '{"type": "request"}',
    '{"type": "refund", "event_id": "x"}',
    f'{{"type": "request", "event_id": "r-x", {FIELDS}, "ts": 1.5e12}}',
    f'{{"type": "request", "event_id": "r-x", {FIELDS}, "ts": 1}}',  # an absurd time
    f'{{"type": "request", "event_id": "r-x", {FIELDS}, "ts": 1552183200000, "ts": 1552183200001}}',  # doubled
    f'{{"type": "request", "event_id": "", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type": "request", "event_id": "{"x" * 257}", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type": "request", "event_id": "\\ud800", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type": "request", "event_id": "NaN", {FIELDS}, "ts": NaN}}',
    f'{{"type": "request", "event_id": "r-1", {FIELDS}, "ts": 1552183200000}} {{"type": "request"}}',
    '{"type":"request","event_id":"r-2","app_id":"1400000001","room_id":"r","user_id":"u","ts":1552183200000},'
    '{"type":"request","event_id":"r-3","app_id":"1400000001","room_id":"r","user_id":"u","ts":1552183200000}',
    '{"type":"request","event_id":"r-4","app_id":"1400000001","room_id":"r","user_id":"u","ts":1552183200000',
    # Two records on one line, the second without "type": one element too many in the plain path's array.
    '{"type":"request","event_id":"r-7","app_id":"1400000001","room_id":"r","user_id":"u","ts":1552183200000},'
    '{"event_id":"r-8","app_id":"1400000001","room_id":"r","user_id":"u","ts":1552183200000}',
    f'{{"type": "request", "event_id": "r-5", {FIELDS}, "ts": 1' + "0" * 5000 + "}",
    # Valid, but not what the plain path takes: escapes, tabs, non-ASCII, "type" last, other spacing.
    f'{{"type": "request", "event_id": "a\\tb", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type": "request", "event_id": "a\\\\tb", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type": "request", "event_id": "a\\nb\\\\", {FIELDS}, "ts": 1552183200000}}',
    '{"type": "request", "event_id": "r-é", "app_id": "app\\t\\\\n", "room_id": "r", "user_id": "u", '
    '"ts": 1552183200000}',
    f'{{"event_id": "r-6", {FIELDS}, "ts": 1552183200000, "type": "request"}}',
    f'{{ "type" : "request" , "event_id": "r-6", {FIELDS}, "ts": 1552183200000}}',
    f'{{"type":"request",  "event_id": "r-6", {FIELDS}, "ts": 1552183200000}}\r',
]


def march_traffic(seed: int = 3, hours: int = 3) -> list[RequestEvent | SuccessEvent]:
    """Simulated traffic of two apps over the end of March (a few hours either side), duplicates and late ones."""
    plan = TrafficPlan(
        app_ids=(APP, "1400000002"),
        start_ms=MONTH_END - hours * 3_600_000,
        end_ms=MONTH_END + 3_600_000,
        peak_per_minute=20,
        seed=seed,
        tz=SHANGHAI,
        duplicate_rate=0.05,
        late_success_rate=0.05,
        missing_request_ts_rate=0.05,
    )
    return list(generate(plan))


def lines_of(events: Iterable[RequestEvent | SuccessEvent | str], spaced_every: int = 7) -> str:
    """JSON Lines: events compact, every ``spaced_every``-th with json.dumps's spaces; strings as they are."""
    out = []
    for n, item in enumerate(events):
        if isinstance(item, str):
            out.append(item)
        elif n % spaced_every == 0:
            out.append(json.dumps({"type": item.kind, **to_record(item)}))
        else:
            out.append(to_line(item))
    return "".join(line + "\n" for line in out)


def with_odd_lines(
    events: list[RequestEvent | SuccessEvent], every: int = 50
) -> list[RequestEvent | SuccessEvent | str]:
    mixed: list[RequestEvent | SuccessEvent | str] = []
    for n, event in enumerate(events):
        mixed.append(event)
        if n % every == 0:
            mixed.append(ODD_LINES[(n // every) % len(ODD_LINES)])
    return mixed


def count(paths: list[Path], **options: Any) -> tuple[CountedEvents, list[str]]:
    bad: list[str] = []
    counted = count_event_files(paths, SHANGHAI, MARCH, BOUNDS, lambda line: bad.append(str(line)), **options)
    return counted, bad


def assert_same_as_slot_tally(paths: list[Path], **options: Any) -> CountedEvents:
    counted, bad = count(paths, **options)
    tally, expected_bad, _ = slot_tally_count(paths, SHANGHAI, MARCH, BOUNDS)
    assert bad == [str(line) for line in expected_bad]
    assert counted.bad_lines == len(expected_bad)
    assert counted.apps() == tally.apps()
    for app_id in tally.apps() | {"nobody"}:
        assert counted.counts(app_id) == tally.counts(app_id), app_id
        assert list(counted.counts(app_id)) == list(tally.counts(app_id)), "sorted by slot start"
    assert (counted.duplicates, counted.outside_window) == (tally.duplicates, tally.outside_window)
    assert_covers(counted, oracle_minutes(paths))
    return counted


def oracle_minutes(paths: list[Path]) -> set[int]:
    """The start of each minute of March with a valid event (its own time), every line read by the full rules."""
    minutes = set()
    for path in paths:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        for raw in data.split(b"\n"):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                event = parse_line(line, BOUNDS)
            except (UnicodeDecodeError, InvalidEvent):
                continue
            if MARCH[0] <= event.ts < MARCH[1]:
                minutes.add(event.ts - event.ts % MINUTE_MS)
    return minutes


def minutes_of(events: Iterable[RequestEvent | SuccessEvent]) -> set[int]:
    """The start of each minute of March in which one of ``events`` happened (by its own ``ts``)."""
    return {e.ts - e.ts % MINUTE_MS for e in events if MARCH[0] <= e.ts < MARCH[1]}


def assert_covers(counted: CountedEvents, minutes: set[int]) -> None:
    assert (counted.covered.start_ms, counted.covered.end_ms) == MARCH, "the map spans the window"
    assert list(counted.covered.minutes()) == sorted(minutes)
    expected = MinuteMap(*MARCH)
    expected.add_minutes(minute // MINUTE_MS for minute in minutes)
    assert counted.covered.to_bytes() == expected.to_bytes()


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files cut into pieces of about 4 KB, read in blocks of 1,000 bytes: lines meet every kind of edge."""
    monkeypatch.setattr(counting, "MIN_PIECE_BYTES", 1)
    monkeypatch.setattr(counting, "PIECE_BYTES", 4096)
    monkeypatch.setattr(files, "BLOCK_BYTES", 1000)


# Finding the files.


def test_files_directories_and_globs_name_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "deep").mkdir()
    for name in ("day/b.jsonl", "day/a.jsonl.gz", "day/c.json", "day/deep/d.jsonl", "x.jsonl", "y.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    day, x = tmp_path / "day", tmp_path / "x.jsonl"
    assert event_files([str(day)]) == [day / "a.jsonl.gz", day / "b.jsonl"]  # only its own event files
    assert event_files([str(tmp_path / "*.jsonl*")]) == [x, tmp_path / "y.jsonl.gz"]
    assert event_files([str(tmp_path / "**" / "*.jsonl")]) == [day / "b.jsonl", day / "deep" / "d.jsonl", x]
    assert event_files([str(tmp_path / "d*")]) == [day / "a.jsonl.gz", day / "b.jsonl"]  # a directory matched
    assert event_files([str(day / "c.json"), str(x), str(x)]) == [day / "c.json", x, x]  # as given, twice too


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("missing.jsonl", "event file not found: {spec}"),
        ("empty", "no event files (*.jsonl, *.jsonl.gz) in {spec}"),
        ("*.csv", "no event files match {spec}"),
        ("nothing-*/*.jsonl", "no event files match {spec}"),
    ],
)
def test_a_spec_naming_no_event_file_is_one_line(
    cli: Callable[..., CliRun], tmp_path: Path, spec: str, said: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.csv.txt").write_bytes(b"")
    spec = str(tmp_path / spec)
    with pytest.raises(EventFilesError) as raised:
        event_files([spec])
    assert str(raised.value) == said.format(spec=spec)
    run = cli("report", "--events", spec, "--month", "2019-03")
    assert run.assert_one_line_error() == f"sla-stream: {said.format(spec=spec)}"


def damaged(kind: str, data: bytes) -> bytes:
    packed = gzip.compress(data)
    if kind == "truncated":
        return packed[: len(packed) // 2]
    if kind == "corrupt":
        middle = len(packed) // 2
        return packed[:middle] + bytes(b ^ 0x55 for b in packed[middle : middle + 16]) + packed[middle + 16 :]
    return data  # not gzip at all


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "not gzip"])
@pytest.mark.parametrize("processes", [1, 2])
def test_a_damaged_gzip_file_stops_the_count_naming_it(
    tmp_path: Path, cli: Callable[..., CliRun], kind: str, processes: int
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(lines_of(march_traffic()))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(damaged(kind, good.read_bytes()))
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(EventFilesError) as raised:
        count([good, bad], processes=processes, spill_dir=spill)
    assert str(raised.value).startswith(f"{bad}: ")
    assert "\n" not in str(raised.value)
    assert list(spill.iterdir()) == [], "the spill is removed after an error too"
    run = cli("report", "--events", good, "--events", bad, "--month", "2019-03")
    assert run.assert_one_line_error().startswith(f"sla-stream: {bad}: ")


# Counting the same.


@pytest.mark.parametrize("processes", [1, 2])
def test_the_same_counts_as_slot_tally_with_many_partitions_split_again(
    tmp_path: Path, small_pieces: None, processes: int
) -> None:
    """A budget of 20 KB: the partitions outgrow it, are split again, and nothing is counted twice or lost."""
    events = march_traffic()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl.gz"
    first.write_text(lines_of(with_odd_lines(events[: len(events) // 2])))
    second.write_bytes(gzip.compress(lines_of(with_odd_lines(events[len(events) // 3 :])).encode()))
    counted = assert_same_as_slot_tally([first, second, first], memory_budget=20_000, processes=processes)
    assert counted.partitions > 10 and counted.splits > 0, "the budget should force partitions to be split again"
    assert counted.duplicates > len(events) // 2  # the first file twice, the second overlapping it
    assert counted.outside_window > 100 and counted.bad_lines > 20


def test_split_partitions_count_as_whole_ones(tmp_path: Path) -> None:
    """All traffic in one slot: one partition, split again down to a few lines a part; still exact."""
    slot = MONTH_END - 300_000
    events = [RequestEvent(f"r-{i % 700}", APP, "r", "u", slot + i) for i in range(2000)]
    path = tmp_path / "one-slot.jsonl"
    path.write_text(lines_of(events))
    counted = assert_same_as_slot_tally([path], memory_budget=3_000)
    assert counted.counts(APP) == {slot: counted.counts(APP)[slot]} and counted.duplicates == 1300
    assert counted.splits >= 1, "one slot's partition, far over the budget, should have been split again"


def test_bad_lines_are_skipped_with_the_words_and_numbers_of_before(tmp_path: Path, small_pieces: None) -> None:
    events = march_traffic(hours=1)[:300]
    path = tmp_path / "odd.jsonl"
    with path.open("wb") as out:
        out.write(lines_of(with_odd_lines(events, every=3)).encode())
        out.write(b'{"type": "request", "event_id": "\xff\xfe"}\n')  # not UTF-8
        out.write(b"\xef\xbb\xbf" + to_line(events[0]).encode() + b"\n")  # a byte-order mark
        out.write(to_line(events[1]).encode() + b"\r\n")
        out.write(b"x" * 5000 + b"\n")  # longer than a block
        out.write(to_line(events[2]).encode())  # the last line, without a newline
    assert_same_as_slot_tally([path], processes=2, memory_budget=5_000)
    path.write_bytes(path.read_bytes() + b"\n{")
    counted, bad = count([path])
    assert bad[-1].startswith(f"{path}:{len(path.read_bytes().splitlines())}: not valid JSON")
    assert_same_as_slot_tally([path])


def test_an_id_with_tabs_newlines_and_backslashes_is_one_id(tmp_path: Path) -> None:
    """Ids are whole in the spill: ``a<TAB>b`` and ``a\\tb`` are two ids, and each is the same id however written."""
    slot = MONTH_END - 300_000
    ids = ["a\tb", "a\\tb", "a\nb", "a\\nb", "a\\", "a", "\\\\", "\t", "é", "a\x00b"]
    apps = [APP, "app\twith\ttabs", "app\\t", "app\n"]
    written = [RequestEvent(i, app, "r", "u", slot) for i in ids for app in apps]
    lines = [to_line(e) for e in written]
    lines += [json.dumps({"type": e.kind, **to_record(e)}, ensure_ascii=False) for e in written]  # again, unescaped
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    counted = assert_same_as_slot_tally([path], memory_budget=2_000)
    assert counted.apps() == set(apps)
    assert counted.counts("app\twith\ttabs") == {slot: counted.counts(APP)[slot]}
    assert counted.counts(APP)[slot].requests == len(ids) and counted.duplicates == len(written)


def test_an_event_counts_once_whatever_form_its_lines_take(tmp_path: Path) -> None:
    """The plain path's lines and the full rules' lines of the same event meet in the same spilled line."""
    event = SuccessEvent("s-1", "r-1", APP, "r", "u", MONTH_END - 10_000, MONTH_END - 20_000)
    record = to_record(event)
    forms = [
        to_line(event),
        json.dumps({"type": "success", **record}),
        json.dumps({**record, "type": "success"}),
        json.dumps({"type": "success", **record}, indent=None, separators=(", ", " : ")),
        json.dumps({"type": "success", **record}).replace("s-1", "\\u0073-1"),
    ]
    path = tmp_path / "forms.jsonl"
    path.write_text("".join(line + "\n" for line in forms))
    counted = assert_same_as_slot_tally([path])
    assert counted.duplicates == len(forms) - 1


def test_the_spill_is_removed_after_a_count_and_after_a_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines_of(with_odd_lines(march_traffic())))
    spill = tmp_path / "spill"
    spill.mkdir()
    count([path], spill_dir=spill, memory_budget=50_000)
    assert list(spill.iterdir()) == []

    def interrupted(line: BadLine) -> None:
        raise KeyboardInterrupt

    for processes in (1, 2):
        with pytest.raises(KeyboardInterrupt):
            count_event_files([path], SHANGHAI, MARCH, BOUNDS, interrupted, processes=processes, spill_dir=spill)
        assert list(spill.iterdir()) == []


class Recorded:
    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.updates: list[tuple[int, int]] = []
        self.closed = False

    def update(self, offsets: int, events: int) -> None:
        self.updates.append((offsets, events))

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("processes", [1, 2])
def test_progress_counts_the_bytes_read_then_the_bytes_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pieces: None, processes: int
) -> None:
    monkeypatch.setattr(counting, "SHOW_AFTER_S", 0.0)
    events = march_traffic()
    plain, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    plain.write_text(lines_of(events))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    shown: list[Recorded] = []

    def factory(label: str, total: int, unit: str) -> Recorded:
        shown.append(Recorded(label, total, unit))
        return shown[-1]

    counted, _ = count([plain, packed], progress=factory, processes=processes, memory_budget=20_000)
    reading, counting_ = shown
    size = 2 * plain.stat().st_size  # the gzip file's as it records it
    label = f"reading 2 event files ({size:,} bytes uncompressed)"
    assert (reading.label, reading.total, reading.unit) == (label, size, "bytes")
    assert reading.updates[-1] == (size, 2 * len(events)), "every byte read (uncompressed for gzip), every event"
    assert [u for u, _ in reading.updates] == sorted(u for u, _ in reading.updates)
    assert counting_.label == f"counting distinct events in {counted.partitions} partitions"
    assert counting_.updates[-1][0] == counting_.total == counted.spilled_bytes
    assert reading.closed and counting_.closed


# Generated files.

event_times = st.integers(MONTH_END - 900_000, MONTH_END + 300_000)
ids = st.sampled_from(["r-1", "r-2", "s-1", "x", "a\tb", "a\\tb", "é"])
apps = st.sampled_from([APP, "1400000002", "a\tb"])


@st.composite
def event_lines(draw: st.DrawFn) -> str:
    """A line: a request or success near the month's end (in one of three forms), or an odd line."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.sampled_from(ODD_LINES))
    ts = draw(event_times)
    if choice < 5:
        event: RequestEvent | SuccessEvent = RequestEvent(draw(ids), draw(apps), "r", "u", ts)
    else:
        request_ts = draw(st.none() | st.integers(ts - 600_000, ts))
        event = SuccessEvent(draw(ids), "r-1", draw(apps), "r", "u", ts, request_ts)
    form = draw(st.integers(0, 2))
    record = {"type": event.kind, **to_record(event)}
    return to_line(event) if form == 0 else json.dumps(record) if form == 1 else json.dumps(record, ensure_ascii=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(event_lines(), max_size=40), min_size=1, max_size=3), st.integers(500, 20_000))
def test_generated_files_count_as_slot_tally_counts_them(
    tmp_path_factory: pytest.TempPathFactory, contents: list[list[str]], budget: int
) -> None:
    folder = tmp_path_factory.mktemp("generated")
    paths = []
    for n, lines in enumerate(contents):
        path = folder / (f"{n}.jsonl.gz" if n % 2 else f"{n}.jsonl")
        data = "".join(line + "\n" for line in lines).encode("utf-8", errors="surrogatepass")
        path.write_bytes(gzip.compress(data) if n % 2 else data)
        paths.append(path)
    assert_same_as_slot_tally(paths, memory_budget=budget)


def test_the_report_of_a_folder_of_gzip_and_plain_files_is_the_report_of_one_file(
    tmp_path: Path, cli: Callable[..., CliRun]
) -> None:
    events = march_traffic()
    whole = tmp_path / "whole.jsonl"
    whole.write_text(lines_of(events))
    (tmp_path / "parts").mkdir()
    third = len(events) // 3
    for n, part in enumerate((events[:third], events[third : 2 * third], events[2 * third :])):
        data = lines_of(part).encode()
        if n % 2:
            (tmp_path / "parts" / f"{n}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / "parts" / f"{n}.jsonl").write_bytes(data)
    one = cli("report", "--events", whole, "--month", "2019-03", "--format", "json")
    parts = cli("report", "--events", tmp_path / "parts", "--month", "2019-03", "--format", "json")
    globbed = cli("report", "--events", str(tmp_path / "parts" / "*.jsonl*"), "--month", "2019-03", "--format", "json")
    assert one.code == parts.code == globbed.code == 0
    assert one.out == parts.out == globbed.out and json.loads(one.out)
    assert one.err_lines[-1] == parts.err_lines[-1] == globbed.err_lines[-1]


def test_uniform_lines_go_through_the_block_path_and_count_as_slot_tally(
    tmp_path: Path, small_pieces: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines all written alike (as the simulator and most exporters write them) are parsed a block at a time;
    the events placed that way count exactly as the oracle counts them, outside the month and duplicates too."""
    placed: list[int] = []
    place = counting._Reader._place

    def counting_place(self: Any, requests: list[Any], successes: list[Any]) -> None:
        placed.append(len(requests) + len(successes))
        place(self, requests, successes)

    monkeypatch.setattr(counting._Reader, "_place", counting_place)
    events = march_traffic(seed=5)
    path = tmp_path / "uniform.jsonl"
    path.write_text(lines_of(events, spaced_every=10**9) + "not json\n" + lines_of(events[:50], spaced_every=10**9))
    counted = assert_same_as_slot_tally([path], processes=1)
    assert sum(placed) > 0.9 * len(events), "most events should take the block path"
    assert counted.outside_window > 100 and counted.duplicates > 50 and counted.bad_lines == 1


def test_a_line_longer_than_many_blocks_is_read_whole_in_linear_time(tmp_path: Path) -> None:
    """A line spanning thousands of blocks is joined once (it was quadratic), with the lines around it intact."""
    long_line = b'{"type": "request", "event_id": "' + b"x" * 2_000_000 + b'"}\n'
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"a\n" + long_line + b"b\nc")
    piece = files.Piece(path, 0, path.stat().st_size, path.stat().st_size, path.stat().st_size)
    blocks = list(files.read_blocks(piece, lambda read: None, block_bytes=512))
    assert b"".join(blocks) == path.read_bytes()
    assert all(block.endswith(b"\n") for block in blocks[:-1]) and blocks[-1] == b"c"
    assert b"".join(blocks).split(b"\n") == [b"a", long_line.rstrip(b"\n"), b"b", b"c"]
    assert long_line in blocks[0] + blocks[1], "the long line comes whole in one block, with what follows it"


def test_a_counting_process_that_dies_stops_the_report_with_one_line(tmp_path: Path) -> None:
    """A pool never finishes a task whose process died; the count watches its processes instead of hanging."""
    dead = multiprocessing.get_context("spawn").Process(target=os._exit, args=(9,))
    dead.start()
    dead.join()
    job = counting._Job(tmp_path, 1, SHANGHAI, MARCH, BOUNDS, 1 << 20, 1, 1 << 16)
    workers = counting._Workers(job, 1)
    workers.processes = {dead}
    with pytest.raises(counting.CountingProcessDied, match="exit status 9"):
        workers._check_alive()


def test_a_report_stopped_by_sigterm_mid_read_leaves_no_spill_and_no_process(tmp_path: Path) -> None:
    """``timeout``, ``kill`` or a service manager stopping ``sla-stream report`` while its pool reads: the command
    exits 143 in one go, its processes are gone and the spill is removed, as after Ctrl-C."""
    events = march_traffic(hours=6)
    path = tmp_path / "events.jsonl"
    text = lines_of(events)
    path.write_text(text * (1 + counting.SMALL_INPUT_BYTES * 3 // len(text)))  # large enough for the pool
    spill = tmp_path / "tmp"
    spill.mkdir()
    command = [sys.executable, "-m", "stream.cli", "report", "--events", str(path), "--month", "2019-03"]
    report = subprocess.Popen(
        command, env={**os.environ, "TMPDIR": str(spill)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not any(spill.glob("sla-report-*/*")) and report.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert report.poll() is None, "the report should still be reading when it is stopped"
    pool = psutil.Process(report.pid).children(recursive=True)
    assert pool, "a file this size is read by a pool of processes"
    report.send_signal(signal.SIGTERM)
    _, err = report.communicate(timeout=60)
    assert report.returncode == 143 and "Traceback" not in err, err
    assert list(spill.iterdir()) == [], "the spill should be removed"
    psutil.wait_procs(pool, timeout=10)
    assert not [p for p in pool if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "no counting process left"


# Coverage: the minutes of the month in which any valid event happened.


def test_coverage_is_the_minutes_of_valid_events_by_their_own_time(tmp_path: Path, small_pieces: None) -> None:
    """Any app, requests and successes, counted or duplicate, whatever their slot; bad lines and events outside the
    month mark nothing. Lines all alike (the block path) and mixed ones (line by line) alike."""
    start = MARCH[0]
    inside = [
        RequestEvent("r-1", APP, "r", "u", start),  # the month's first instant
        RequestEvent("r-1", APP, "r", "u", start + 59_999),  # a duplicate, in the same minute
        RequestEvent("r-2", "1400000002", "r", "u", start + 10 * MINUTE_MS + 1),  # another app
        SuccessEvent("s-2", "r-2", "1400000002", "r", "u", start + 12 * MINUTE_MS, start + 10 * MINUTE_MS + 1),
        SuccessEvent("s-3", "r-3", APP, "r", "u", start + 30 * MINUTE_MS, start - 10_000),  # its slot: February's
        SuccessEvent("s-4", "r-4", APP, "r", "u", start + 20 * MINUTE_MS, None),
        RequestEvent("r-5", APP, "r", "u", MONTH_END - 1),  # the month's last millisecond
    ]
    outside = [
        RequestEvent("r-0", APP, "r", "u", start - 1),
        SuccessEvent("s-6", "r-6", APP, "r", "u", MONTH_END, MONTH_END - 5 * MINUTE_MS),  # its slot is March's
        RequestEvent("r-7", APP, "r", "u", MONTH_END + 30 * MINUTE_MS),
    ]
    empty = start + 40 * MINUTE_MS  # minutes named only by bad lines
    bad = [
        f'{{"type": "request", "event_id": "r-8", {FIELDS}, "ts": {empty}',  # cut short
        f'{{"type": "request", "event_id": "r-8", "app_id": "{APP}", "ts": {empty + MINUTE_MS}}}',  # fields missing
        f'{{"type": "success", "event_id": "s-8", {FIELDS}, "ts": {empty + 2 * MINUTE_MS}}}',  # no request_id
        f'{{"type": "request", "event_id": "r-8", {FIELDS}, "ts": "{empty + 3 * MINUTE_MS}"}}',  # ts a string
        f'{{"type": "refund", "event_id": "r-8", {FIELDS}, "ts": {empty + 4 * MINUTE_MS}}}',
    ]
    uniform, mixed = tmp_path / "uniform.jsonl", tmp_path / "mixed.jsonl"
    uniform.write_text(lines_of([*inside, *outside] * 20, spaced_every=10**9))
    mixed.write_text(lines_of([*inside, *bad, *outside, *inside[::-1]], spaced_every=2))
    for paths in ([uniform], [mixed], [uniform, mixed]):
        for processes in (1, 2):
            counted = assert_same_as_slot_tally(paths, processes=processes)
            assert counted.bad_lines == (len(bad) if mixed in paths else 0)
            assert_covers(counted, minutes_of(inside))
            assert [(m - start) // MINUTE_MS for m in counted.covered.minutes()] == [0, 10, 12, 20, 30, 44639]
            assert counted.outside_window >= 3, "the success of February's slot and the events of other months"


def test_coverage_is_the_same_however_the_count_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One process reading whole files, or two reading pieces of 4 KB with partitions split again: one map."""
    events = march_traffic(seed=11, hours=5)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl.gz"
    first.write_text(lines_of(with_odd_lines(events[::2])))
    second.write_bytes(gzip.compress(lines_of(with_odd_lines(events[1::2] + events[:100])).encode()))
    whole = assert_same_as_slot_tally([first, second], processes=1)
    assert whole.splits == 0
    monkeypatch.setattr(counting, "MIN_PIECE_BYTES", 1)
    monkeypatch.setattr(counting, "PIECE_BYTES", 4096)
    monkeypatch.setattr(files, "BLOCK_BYTES", 1000)
    for processes in (1, 2):
        cut = assert_same_as_slot_tally([first, second], processes=processes, memory_budget=20_000)
        assert cut.partitions > 10 and cut.splits > 0, "the budget should force partitions to be split again"
        assert cut.covered.to_bytes() == whole.covered.to_bytes()
    truth = minutes_of(events)
    assert len(truth) > 250 and max(truth) == MONTH_END - MINUTE_MS, "five hours to the month's end, then April"
    assert_covers(whole, truth | {1552183200000})  # and the valid odd lines' minute, 2019-03-10 10:00


def test_a_file_with_nothing_in_the_month_covers_nothing(tmp_path: Path) -> None:
    events = [RequestEvent(f"r-{i}", APP, "r", "u", MONTH_END + i * 7_000) for i in range(500)]
    path = tmp_path / "april.jsonl"
    path.write_text(lines_of(events) + "not json\n")
    counted = assert_same_as_slot_tally([path], processes=2)
    assert list(counted.covered.minutes()) == [] and counted.covered.to_bytes() == bytes(44640 // 8)
    assert counted.outside_window == len(events) and counted.bad_lines == 1


def test_a_piece_sends_its_coverage_as_a_few_bytes(tmp_path: Path) -> None:
    """What a process hands back for a piece is the map's bytes (5.6 kB for a month), trailing zero bytes cut."""
    path = tmp_path / "events.jsonl"
    path.write_text(lines_of([RequestEvent("r-1", APP, "r", "u", MARCH[0] + 17 * MINUTE_MS + 5)]))
    job = counting._Job(tmp_path, 1, SHANGHAI, MARCH, BOUNDS, 1 << 20, 1, 1 << 16)
    size = path.stat().st_size
    try:
        read = counting._read_piece(job, (0, files.Piece(path, 0, size, size, size)))
    finally:
        assert counting._Reader._current is not None
        counting._Reader._current.spill.close()
        counting._Reader._current = None
    assert read.covered == bytes([0, 0, 0b0100_0000])  # minute 17: byte 2, its second bit
    whole = MinuteMap(*MARCH, read.covered)
    assert list(whole.minutes()) == [MARCH[0] + 17 * MINUTE_MS] and len(whole.to_bytes()) == 44640 // 8


def test_a_window_of_part_minutes_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        count_event_files([tmp_path / "never-read.jsonl"], SHANGHAI, (MARCH[0] + 1, MARCH[1]), BOUNDS, print)
