"""``sla-stream watch`` shows its clock in the SLA's time zone and says so, whatever the machine's zone."""

from __future__ import annotations

from datetime import datetime, timezone

from stream.config import load_settings
from stream.tools.watch import render


def test_the_clock_is_the_slas_and_labelled() -> None:
    settings = load_settings(None)
    now = datetime(2026, 12, 8, 2, 30, 5, tzinfo=timezone.utc).timestamp()  # 10:30:05 in Asia/Shanghai
    header = render([], settings, now).splitlines()[0]
    assert settings.policy.timezone.key == "Asia/Shanghai"
    assert "2026-12-08 10:30:05 Asia/Shanghai" in header
    assert "02:30:05" not in header
