"""A real headless Chromium for the page tests: Debian's ``/usr/bin/chromium``, driven by Playwright for Python.

``deploy/packages.sh`` installs Debian's ``chromium`` package (``make up``, so
CI too) and Playwright launches it by its path: ``playwright install``, which
downloads a browser build of its own, is never used. Without Chromium the
tests FAIL with that hint; they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".run" / "screenshots"
"""Where the page tests leave screenshots for a person to look at."""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium, closed afterwards; fails the test with what to run when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run deploy/packages.sh (make up does; it installs Debian's "
            "chromium package). Playwright's own browser download (`playwright install`) is not used.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: make venv (the test extra of pyproject.toml)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A browser page with everything it logged, threw and asked the network for."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def open(self, path: Path) -> Any:
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page

    def close(self) -> None:
        self.context.close()


def say(capsys: pytest.CaptureFixture[str], message: str) -> None:
    """A line in the test output even when pytest captures it (where the screenshots went)."""
    with capsys.disabled():
        print(f"\n{message}")
