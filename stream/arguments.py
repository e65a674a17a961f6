"""Argument types shared by the ``sla-stream`` subcommands.

Each turns the text of one option into a value, or raises
``argparse.ArgumentTypeError`` with a message the user can act on.

Example:
    >>> calendar_month_argument("2019-03")
    (2019, 3)
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
