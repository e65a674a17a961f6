"""The command line reads as a user's guide: every command describes itself, every option has help, and more.

Walks the parser ``sla-stream`` builds, so a command or option added without
help fails here, not in a user's terminal.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stream import __version__
from stream.cli import build_parser

if TYPE_CHECKING:
    from conftest import CliRun


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself included), named by its words after ``sla-stream``."""
    yield " ".join(path) or "sla-stream", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


ALL = list(commands(build_parser()))


def test_the_walk_finds_every_command() -> None:
    names = {name for name, _ in ALL}
    assert {"report", "replay", "worker", "watch", "exempt add", "exempt list", "exempt remove"} <= names


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[name for name, _ in ALL])
def test_every_command_describes_itself_and_every_option_has_help(name: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description and len(parser.description) > 40, f"{name}: no description for --help"
    assert "docstring" not in parser.description.lower()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, f"{name} {label}: no help"
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{name} {choice.dest}: no summary line"


def test_the_top_level_help_lists_the_exit_statuses() -> None:
    text = build_parser().format_help()
    for status in ("0", "1", "2", "3", "130"):
        assert any(line.strip().startswith(f"{status} ") for line in text.splitlines()), status


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"sla-stream {__version__}"
    assert __version__ not in ("", "unknown")


def test_an_output_that_cannot_be_written_is_a_refusal(
    cli: Callable[..., CliRun], write_events: Callable[..., Path], tmp_path: Path
) -> None:
    """Exit 2 with one line, as every other refusal (it was 1)."""
    events = write_events([])
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    run = cli("simulate", "--apps", "1", "--month", "2019-03", "--out", blocked / "events.jsonl")
    line = run.assert_one_line_error()
    assert str(blocked) in line
    assert events.exists()
