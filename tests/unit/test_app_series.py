"""The app series' text: what Prometheus parses back from it, and that only changed apps are rendered again."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from fractions import Fraction
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families

from stream.formats import MonthSummary
from stream.live.app_series import FAMILIES, AppSeries
from stream.live.metrics import AppSnapshot, OpenSlot
from stream.live.store import AppCounters
from stream.sla.verdict import SlotCounts

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOSTILE = 'a"b\\c\nd'
MONTH = MonthSummary(date(2026, 12, 1), date(2026, 12, 31), Fraction(8919, 8928), "99.89%", False, 9, 1, 9, 0, 8, 10)


def app(month: MonthSummary | None = MONTH, requests: int = 40) -> AppSnapshot:
    return AppSnapshot(
        month, OpenSlot(1_796_000_000_000, SlotCounts(requests, requests - 1)), AppCounters(100, 97, 20, 9, 1, 5)
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_reads_back_every_family_and_any_app_id() -> None:
    text = AppSeries(SHANGHAI).text({HOSTILE: app(), "1400000002": app(month=None)})
    read = samples(text)
    hostile = (("app", HOSTILE),)
    assert read[("sla_month_availability_ratio", hostile)] == float(Fraction(8919, 8928))
    assert read[("sla_month_meets_target", hostile)] == 0.0
    assert read[("sla_month_voucher_ratio", hostile)] == 0.1
    assert read[("sla_month_start_timestamp_seconds", hostile)] == 1_796_054_400  # 2026-12-01T00:00+08:00
    assert read[("sla_open_slot_success_ratio", hostile)] == 39 / 40
    assert read[("sla_slots_closed_total", (("app", HOSTILE), ("outcome", "bad")))] == 9
    assert read[("sla_calls_failed_total", hostile)] == 5
    assert ("sla_month_availability_ratio", (("app", "1400000002"),)) not in read, "no running month: no gauge"
    assert read[("sla_calls_total", (("app", "1400000002"),))] == 100
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names == {f.name.removesuffix("_total") for f in FAMILIES}
    assert len(read) == 2 * 19 - 10


def test_only_the_apps_whose_figures_changed_are_rendered_again() -> None:
    series = AppSeries(SHANGHAI)
    rendered: list[str] = []
    render = series._render
    series._render = lambda app_id, snapshot: rendered.append(app_id) or render(app_id, snapshot)  # type: ignore[method-assign]
    fleet = {f"14{n:08d}": app() for n in range(1_000)}
    first = series.text(fleet)
    assert len(rendered) == 1_000
    rendered.clear()
    assert series.text(dict(fleet)) == first and rendered == [], "a quiet fleet: nothing rendered"
    fleet["1400000007"] = app(requests=41)
    fleet["1400000500"] = app(month=replace(MONTH, slots_used=10))
    changed = series.text(fleet)
    assert sorted(rendered) == ["1400000007", "1400000500"]
    assert samples(changed)[("sla_open_slot_requests", (("app", "1400000007"),))] == 41
    del fleet["1400000999"]
    assert "1400000999" not in series.text(fleet), "an app gone from the snapshot is gone from the scrape"
