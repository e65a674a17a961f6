"""``sla-stream report`` over a generated month of 5 million events: the old counting's report, in less memory.

The month (October 2026 in Shanghai, three apps, with two hours either side
so that some events fall outside it) is generated once per run by
``sla-stream simulate`` as four files, two of them gzipped, with a few bad
lines scattered through one. The report is run as a command twice: with the
offline counting (stream/offline) and with the old one (every id in one
``SlotTally``, tests/offline_oracle.py). Standard output (the JSON report)
and standard error (each skipped line, the summary) must be the same, byte
for byte, and the peak memory of the new one's processes, summed, must be
well below the old one's. Takes about a minute on two cores (25 s to generate the files, 8 s for the new
report, 30 s for the old).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
ORACLE = REPO / "tests" / "offline_oracle.py"
EVENTS = 5_000_000
FILES = 4
EVENTS_PER_PEAK = 94_304 * (31 * 24 + 4) / (31 * 24)
"""Events ``simulate --apps 3`` writes per unit of ``--peak-per-minute`` over October (94,304, as
bench/bench_report.py finds) and 4 hours more."""
BAD_EVERY = 200_000
"""A bad line is put in the first file every this many lines."""
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Run:
    out: str
    err: str
    seconds: float
    peak_rss_mb: float


def run_measured(command: list[str]) -> Run:
    """Run a command to its end; its output, time and the peak resident memory of its process tree (sampled)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        done.set()
        sampler.join()
    assert process.returncode == 0, err[-2000:]
    return Run(out, err, time.perf_counter() - started, peak[0] / 2**20)


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of the process and all its descendants, as psutil reads them now."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in tree:
        with contextlib.suppress(psutil.Error):  # ended since it was listed
            total += member.memory_info().rss
    return total


def _generate(folder: Path, index: int) -> Path:
    """One file of the month, with a seed of its own; the first gets bad lines, every other one is gzipped."""
    plain = folder / f"events-{index}.jsonl"
    peak = EVENTS / FILES / EVENTS_PER_PEAK
    command = [sys.executable, "-m", "stream.cli", "simulate", "--apps", "3", "--seed", str(50 + index)]
    command += ["--start", "2026-09-30T22:00+08:00", "--end", "2026-11-01T02:00+08:00"]
    subprocess.run([*command, "--peak-per-minute", f"{peak:.4f}", "--out", str(plain)], check=True, cwd=REPO)
    if index == 0:
        with_bad = folder / "with-bad-lines.tmp"
        with plain.open("rb") as source, with_bad.open("wb") as out:
            for number, line in enumerate(source, start=1):
                out.write(line)
                if number % BAD_EVERY == 0:
                    out.write(b'{"type": "request", "event_id": "broken"}\n' if number % 400_000 else b"not json\n")
        with_bad.replace(plain)
    if index % 2:
        packed = folder / f"events-{index}.jsonl.gz"
        with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=1) as out:
            shutil.copyfileobj(source, out, 1 << 20)  # zlib lets go of the GIL: the threads compress in parallel
        plain.unlink()
        return packed
    return plain


@pytest.fixture(scope="module")
def month_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("month-at-scale")
    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda index: _generate(folder, index), range(FILES)))
    print(f"\ngenerated {FILES} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_report_of_five_million_events_is_the_old_ones_in_far_less_memory(month_folder: Path) -> None:
    arguments = ["report", "--events", str(month_folder), "--month", "2026-10", "--format", "json"]
    new = run_measured([sys.executable, "-m", "stream.cli", *arguments])
    old = run_measured([sys.executable, str(ORACLE), *arguments])
    print(
        f"\nreport of {month_folder}: new {new.seconds:.0f} s, peak RSS {new.peak_rss_mb:.0f} MB; "
        f"old {old.seconds:.0f} s, peak RSS {old.peak_rss_mb:.0f} MB",
        file=sys.stderr,
    )

    assert new.out == old.out
    months = json.loads(new.out)
    assert {m["app_id"] for m in months} == {"1400000001", "1400000002", "1400000003"}
    assert sum(m["requests"] + m["successes"] for m in months) > 0.98 * EVENTS * 31 * 24 / (31 * 24 + 4)
    new_lines = [line for line in new.err.splitlines() if not line.startswith("report 2026-10: ")]  # progress
    assert new_lines == old.err.splitlines()
    summary = new_lines[-1]
    bad, duplicates, outside = (int(word) for word in summary.split() if word.isdigit())
    lines = sum(_lines(path) for path in month_folder.iterdir())
    assert bad == sum(1 for line in new_lines if line.startswith("skipped ")) >= 5
    assert duplicates > 5_000 and outside > 5_000
    assert sum(m["requests"] + m["successes"] for m in months) + duplicates + outside + bad == lines

    assert new.peak_rss_mb < 400, "bounded: the budget's worth per process, whatever the month's size"
    assert new.peak_rss_mb < old.peak_rss_mb / 2


def _lines(path: Path) -> int:
    with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 22), b""))
