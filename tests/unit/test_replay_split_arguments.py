"""``sla-stream replay --part K/N --run NAME``: bad arguments are one line and exit status 2, before any service.

The pure pieces (the run's record in JSON, the split of a plan into parts)
are tested by the doctests of stream/monthend/parts.py and stream/arguments.py;
the runs themselves against Kafka and Redis in
tests/integration/test_replay_split_across_hosts.py.
"""

from __future__ import annotations

import pytest

from stream.cli import main


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--part", "2/2", "--run", "nov"], "part must be K/N, part K (from 0) of N parts, so 0 <= K < N, got '2/2'"),
        (["--part", "1", "--run", "nov"], "part must be K/N"),
        (["--part", "0/2", "--run", "Nov close"], "run name must be 1 to 32 of a-z, 0-9 and '-' (not first)"),
        (["--part", "0/2", "--run=-nov"], "run name must be"),
        (["--part", "0/2", "--run", "n" * 33], "run name must be"),
        (["--part", "0/2"], "--part needs --run NAME"),
        (["--run", "nov"], "--run and --part-timeout go with --part K/N"),
        (["--part-timeout", "60"], "--run and --part-timeout go with --part K/N"),
        (["--part", "0/2", "--run", "nov", "--part-timeout", "0"], "must be a whole number from 1"),
    ],
)
def test_bad_split_arguments_are_refused_in_one_line(
    arguments: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--month", "2026-11", *arguments]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("sla-stream"), err
    assert says in err, err
