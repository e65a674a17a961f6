"""Time and memory of ``sla-stream report`` over a month of event files, against a plain read of them (`make bench`).

The offline report counts in bounded memory (docs/offline-report.md): what
matters is how long a month of files takes, and that memory stays flat as
the month grows. For each size (``--sizes``, default 5M and 50M events) a
month of simulated traffic (October 2026, three apps, ``sla-stream
simulate``) is generated once into ``.cache/report-bench/`` as several
files, every other one gzipped, and reused afterwards (a directory per size
and generator parameters, complete once its ``manifest.json`` is written).
Then, one after the other:

- **plain read**: every file opened, decompressed, split into lines and the
  lines counted, in Python, in one process: the floor of reading the files;
- **report**: ``sla-stream report --events DIR --month 2026-10 --format json``
  as a process of its own, timed from start to exit, the resident memory of
  its whole process tree (it forks a process per core) summed from /proc
  every 0.2 s for the peak (PSS too: RSS counts the pages a fork shares in
  each process). Its exit status must be 0, and its figures must add up:
  the distinct requests and successes of its JSON, with the duplicates,
  events outside the month and bad lines of its summary line, must be
  exactly the lines of the files.

The ratio report/plain read is what to compare across machines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "report-bench"
SLA = [sys.executable, "-m", "stream.cli"]
MONTH = "2026-10"
APPS = 3
EVENTS_PER_PEAK = 94_304
"""Events ``simulate --apps 3`` writes for October per unit of ``--peak-per-minute``: requests at 0.575 of the peak
(the daily curve's mean) times 1 + 1/2 + 1/3 over 44,640 minutes, each with a success, 0.2% delivered twice."""
EVENTS_PER_FILE = 5_000_000
SAMPLE_EVERY_S = 0.2
BLOCK = 4 << 20
LAYOUT = 1
"""Bumped when the generated files change shape, so a cache of another layout is not reused."""


@dataclass(frozen=True)
class DataSet:
    events: int
    folder: Path
    files: list[Path]
    lines: int
    generated_s: float | None
    """Seconds the generation took, None when the files were already there."""

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Measure:
    data: DataSet
    plain_s: float
    report_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    summary: str

    @property
    def plain_rate(self) -> float:
        return self.data.lines / self.plain_s

    @property
    def report_rate(self) -> float:
        return self.data.lines / self.report_s


def size_argument(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"a size is a number of events such as 5M or 500k, got {text!r}")
    return int(float(match[1]) * {"": 1, "k": 1e3, "m": 1e6}[match[2].lower()])


def data_set(events: int, jobs: int) -> DataSet:
    """The month's files for ``events`` events: from the cache, or generated now (``jobs`` at a time)."""
    files = max(4, round(events / EVENTS_PER_FILE))
    peak = events / files / EVENTS_PER_PEAK
    folder = CACHE / f"{events}-events-{files}-files-{APPS}-apps-{MONTH}-layout{LAYOUT}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        known = json.loads(manifest.read_text())
        return DataSet(events, folder, [folder / name for name in known["files"]], known["lines"], None)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating {events:,} events into {folder} ({files} files, every other gzipped) ...", flush=True)
    started = time.perf_counter()
    names = [f"events-{i:02d}.jsonl" + (".gz" if i % 2 else "") for i in range(files)]
    with ThreadPoolExecutor(jobs) as pool:
        lines = sum(pool.map(lambda job: _generate(folder, *job, peak), enumerate(names)))
    seconds = time.perf_counter() - started
    manifest.write_text(json.dumps({"files": names, "lines": lines, "peak_per_minute": peak, "seconds": seconds}))
    print(f"  {lines:,} events in {seconds:.0f} s", flush=True)
    return DataSet(events, folder, [folder / name for name in names], lines, seconds)


def _generate(folder: Path, index: int, name: str, peak: float) -> int:
    """One file of the month: ``sla-stream simulate`` with its own seed, gzipped (in a process) if so named."""
    plain = folder / name.removesuffix(".gz")
    command = [*SLA, "simulate", "--apps", str(APPS), "--month", MONTH, "--peak-per-minute", f"{peak:.4f}"]
    subprocess.run([*command, "--seed", str(1000 + index), "--out", str(plain)], check=True, cwd=REPO)
    lines = _count_lines(plain)
    if name.endswith(".gz"):
        compress = "import gzip, shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), gzip.open(sys.argv[2], 'wb'))"
        subprocess.run([sys.executable, "-c", compress, str(plain), str(folder / name)], check=True)
        plain.unlink()
    print(f"  {name}: {lines:,} events", flush=True)
    return lines


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(BLOCK), b""))


def plain_read(files: list[Path]) -> tuple[float, int]:
    """Seconds to open, decompress, split into lines and count the lines of every file, in this process."""
    started = time.perf_counter()
    lines = 0
    for path in files:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as handle:
            rest = b""
            while block := handle.read(BLOCK):
                block = rest + block
                cut = block.rfind(b"\n") + 1
                rest = block[cut:]
                lines += len(block[:cut].split(b"\n")) - 1
            lines += 1 if rest else 0
    return time.perf_counter() - started, lines


class TreeSampler:
    """Samples the resident memory (RSS and PSS) of a process and all its descendants (psutil); keeps the peaks."""

    def __init__(self, pid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        self.pid = pid
        self.every_s = every_s
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            rss = pss = 0
            for process in _tree(self.pid):
                try:
                    memory = process.memory_full_info()  # PSS shares a library's pages among the processes
                except psutil.Error:  # ended since it was listed
                    continue
                rss, pss = rss + memory.rss, pss + memory.pss
            self.peak_rss_kb = max(self.peak_rss_kb, rss // 1024)
            self.peak_pss_kb = max(self.peak_pss_kb, pss // 1024)
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (none when it has ended)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class ReportFailed(Exception):
    """The report exited with an error, or its figures do not add up to the lines of the files."""


def run_report(data: DataSet, work: Path) -> tuple[float, float, float, str]:
    """The report over the data set's folder: seconds, peak RSS and PSS of its process tree (MB), summary line."""
    out, log = work / f"report-{data.events}.json", work / f"report-{data.events}.log"
    command = [*SLA, "report", "--events", str(data.folder), "--month", MONTH, "--format", "json"]
    with out.open("w") as stdout, log.open("w") as stderr:
        started = time.perf_counter()
        report = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO)
        sampler = TreeSampler(report.pid)
        try:
            status = report.wait()
        finally:
            sampler.stop()
        seconds = time.perf_counter() - started
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    if status != 0:
        raise ReportFailed(f"report exited with {status}: {lines[-1] if lines else '(no output)'}; see {log}")
    summary = lines[-1]
    check_figures(data, json.loads(out.read_text()), summary)
    return seconds, sampler.peak_rss_kb / 1024, sampler.peak_pss_kb / 1024, summary


def check_figures(data: DataSet, months: list[dict], summary: str) -> None:
    """Distinct events + duplicates + events outside the month + bad lines = the lines of the files."""
    match = re.fullmatch(
        r"(\d+) bad lines skipped, (\d+) duplicate events counted once, (\d+) events outside .*",
        summary,
    )
    if not match:
        raise ReportFailed(f"no summary line from the report, got {summary!r}")
    bad, duplicates, outside = map(int, match.groups())
    distinct = sum(m["requests"] + m["successes"] for m in months)
    if distinct + duplicates + outside + bad != data.lines:
        raise ReportFailed(
            f"{distinct:,} distinct + {duplicates:,} duplicates + {outside:,} outside + {bad:,} bad "
            f"= {distinct + duplicates + outside + bad:,}, but the files hold {data.lines:,} lines"
        )


def measure(data: DataSet, work: Path) -> Measure:
    size = f"{data.size_bytes / 1e9:.2f} GB in {len(data.files)} files"
    print(f"{data.events:,} events ({size}): plain read ...", flush=True)
    plain_s, lines = plain_read(data.files)
    if lines != data.lines:
        raise ReportFailed(f"the files hold {lines:,} lines, the manifest says {data.lines:,}: remove {data.folder}")
    print(f"  {plain_s:.1f} s; report ...", flush=True)
    report_s, rss, pss, summary = run_report(data, work)
    print(f"  {report_s:.1f} s, peak RSS {rss:.0f} MB (PSS {pss:.0f} MB): {summary}", flush=True)
    return Measure(data, plain_s, report_s, rss, pss, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="5M,50M",
        help="events per month to measure, comma-separated, e.g. 5M,50M (default) or 500k",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="files generated at a time")
    args = parser.parse_args()
    try:
        sizes = [size_argument(text) for text in args.sizes.split(",") if text.strip()]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not sizes or min(sizes) < 1000:
        parser.error("--sizes takes sizes of at least 1k events")
    work = REPO / ".run" / "bench-report"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for events in sizes:
            results.append(measure(data_set(events, args.jobs), work))
    except (ReportFailed, subprocess.CalledProcessError) as error:
        sys.exit(f"bench_report: {error}")

    print(
        f"\nreport of {MONTH}, {os.cpu_count()} cores\n"
        f"{'events':>12} {'files':>5} {'GB':>6} {'generated s':>11} {'plain read s':>12} {'plain ev/s':>11} "
        f"{'report s':>9} {'report ev/s':>11} {'ratio':>6} {'peak RSS MB':>11} {'peak PSS MB':>11}"
    )
    for m in results:
        generated = "cached" if m.data.generated_s is None else f"{m.data.generated_s:.0f}"
        print(
            f"{m.data.lines:>12,} {len(m.data.files):>5} {m.data.size_bytes / 1e9:>6.2f} {generated:>11} "
            f"{m.plain_s:>12.1f} {m.plain_rate:>11,.0f} {m.report_s:>9.1f} {m.report_rate:>11,.0f} "
            f"{m.report_s / m.plain_s:>6.2f} {m.peak_rss_mb:>11.0f} {m.peak_pss_mb:>11.0f}"
        )
    (REPO / ".run" / "bench-report.json").write_text(
        json.dumps(
            [
                {
                    "events": m.data.lines,
                    "files": len(m.data.files),
                    "bytes": m.data.size_bytes,
                    "generated_s": m.data.generated_s,
                    "plain_read_s": m.plain_s,
                    "report_s": m.report_s,
                    "report_rate": m.report_rate,
                    "ratio": m.report_s / m.plain_s,
                    "peak_rss_mb": m.peak_rss_mb,
                    "peak_pss_mb": m.peak_pss_mb,
                    "summary": m.summary,
                }
                for m in results
            ],
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
