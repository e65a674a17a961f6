"""Shared fixtures for the unit tests that drive files and the command line.

Fixtures return small callables, so a test says what it writes or runs in one
line and the plumbing (tmp_path, capsys, exit codes) lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.cli import main
from stream.events import Event, to_line


@dataclass(frozen=True)
class CliRun:
    """What one ``stream.cli.main`` call did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def assert_one_line_error(self) -> str:
        """Exit status 2, exactly one non-empty stderr line, no traceback; returns that line."""
        assert self.code == 2, (self.code, self.err)
        assert "Traceback" not in self.err + self.out
        assert len(self.err_lines) == 1, self.err
        return self.err_lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Run ``sla-stream`` in process: ``cli("report", "--month", "2019-03", ...)``."""

    def run(*argv: str | Path) -> CliRun:
        capsys.readouterr()  # drop anything printed before this call
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


@pytest.fixture
def write_events(tmp_path: Path) -> Callable[..., Path]:
    """Write a JSON Lines event file from events (via ``to_line``) and/or raw line strings."""

    def write(items: Iterable[Event | str], name: str = "events.jsonl") -> Path:
        path = tmp_path / name
        lines = [item if isinstance(item, str) else to_line(item) for item in items]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a TOML settings file (laid over the defaults by ``load_settings``)."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
