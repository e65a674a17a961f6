"""Argument types shared by the ``sla-stream`` subcommands.

Each turns the text of one option into a value, or raises
``argparse.ArgumentTypeError`` with a message the user can act on.

Example:
    >>> calendar_month_argument("2019-03")
    (2019, 3)
    >>> part_argument("1/4"), run_name_argument("nov-close")
    ((1, 4), 'nov-close')
"""

from __future__ import annotations

import argparse
import re


def calendar_month_argument(text: str) -> tuple[int, int]:
    """``YYYY-MM`` as ``(year, month)``, for years the calendar and the event bounds can hold."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not match or not 1 <= int(match[2]) <= 12 or not 1970 <= int(match[1]) <= 9998:
        raise argparse.ArgumentTypeError(f"month must be YYYY-MM from 1970-01, got {text!r}")
    return int(match[1]), int(match[2])


RUN_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
"""A split replay's run name: it becomes part of Redis key names, so short and plain."""


def part_argument(text: str) -> tuple[int, int]:
    """``K/N`` (part K of N, from 0) as ``(K, N)``, for ``replay --part``.

    Example:
        >>> part_argument("4/4")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: part must be K/N, part K (from 0) of N parts, so 0 <= K < N, got '4/4'
    """
    match = re.fullmatch(r"(\d{1,4})/(\d{1,4})", text)
    if not match or not int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(f"part must be K/N, part K (from 0) of N parts, so 0 <= K < N, got {text!r}")
    return int(match[1]), int(match[2])


def run_name_argument(text: str) -> str:
    """A split replay's run name (``replay --run``): 1 to 32 of a-z, 0-9 and ``-``, not starting with ``-``.

    Example:
        >>> run_name_argument("Nov close")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: run name must be 1 to 32 of a-z, 0-9 and '-' (not first), got 'Nov close'
    """
    if not RUN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"run name must be 1 to 32 of a-z, 0-9 and '-' (not first), got {text!r}")
    return text
