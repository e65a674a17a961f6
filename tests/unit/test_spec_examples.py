"""Every worked example and boundary of the agreement (docs/sla.md), section by section."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from stream.sla.assessment import assess_month
from stream.sla.availability import availability, display_percent, error_budget, meets_target, slots_allowed
from stream.sla.claims import OfficialYear, WorkingDayCalendar, claim_window
from stream.sla.compensation import compensation_percent, voucher
from stream.sla.counting import SlotTally, counted_time
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, Subscription, calendar_month, service_months_in
from stream.sla.slots import SLOT_MS, SLOTS_PER_DAY, local_date, slot_start_ms, slots_between, to_epoch_ms
from stream.sla.verdict import SlotCounts, judge_slot

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> int:
    """Epoch ms of an ISO time with offset."""
    return to_epoch_ms(datetime.fromisoformat(text))


# §1 What is counted


def test_success_counts_in_its_requests_slot() -> None:
    request_ts, success_ts = at("2019-03-10T10:04:59.900+08:00"), at("2019-03-10T10:05:00.300+08:00")
    assert slot_start_ms(counted_time(success_ts, request_ts), SHANGHAI) == at("2019-03-10T10:00:00+08:00")


def test_success_without_request_time_uses_its_own() -> None:
    success_ts = at("2019-03-10T10:05:00.300+08:00")
    assert slot_start_ms(counted_time(success_ts, None), SHANGHAI) == at("2019-03-10T10:05:00+08:00")


def test_duplicate_deliveries_count_once() -> None:
    tally = SlotTally(SHANGHAI)
    ts = at("2019-03-10T10:01:00+08:00")
    for _ in range(3):
        tally.add("request", "app", "r-1", ts)
    tally.add("success", "app", "s-1", ts)
    tally.add("success", "app", "s-1", ts)
    assert tally.counts("app") == {at("2019-03-10T10:00:00+08:00"): SlotCounts(1, 1)}
    assert tally.duplicates == 3


def test_more_successes_than_requests_is_rate_one_and_a_data_quality_problem() -> None:
    verdict = judge_slot(SlotCounts(requests=10, successes=12))
    assert verdict.success_rate == 1
    assert not verdict.unavailable
    assert verdict.data_quality_issue


# §2 Slots


def test_slots_are_aligned_to_the_local_clock_288_a_day() -> None:
    day = list(slots_between(at("2019-03-10T00:00:00+08:00"), at("2019-03-11T00:00:00+08:00"), SHANGHAI))
    assert len(day) == SLOTS_PER_DAY == 288
    assert day[0] == at("2019-03-10T00:00:00+08:00")
    assert day[-1] == at("2019-03-10T23:55:00+08:00")
    assert slot_start_ms(at("2019-03-10T00:04:59.999+08:00"), SHANGHAI) == day[0]
    assert slot_start_ms(at("2019-03-10T00:05:00+08:00"), SHANGHAI) == day[1]


def test_day_and_month_follow_the_sla_zone() -> None:
    april_first = at("2019-03-31T16:00:00+00:00")
    assert local_date(april_first, SHANGHAI) == date(2019, 4, 1)
    assert local_date(april_first - 1, SHANGHAI) == date(2019, 3, 31)
    assert local_date(april_first, ZoneInfo("UTC")) == date(2019, 3, 31)
    # The slot boundary is the same instant in both zones (whole quarter-hour offsets).
    assert slot_start_ms(april_first + 1, SHANGHAI) == slot_start_ms(april_first + 1, ZoneInfo("UTC"))


def test_a_month_report_cuts_at_local_midnight() -> None:
    march = calendar_month(2019, 3)
    last_march_slot = slot_start_ms(at("2019-03-31T15:59:00+00:00"), SHANGHAI)
    first_april_slot = slot_start_ms(at("2019-03-31T16:00:00+00:00"), SHANGHAI)
    bad = SlotCounts(100, 50)
    both = {last_march_slot: bad, first_april_slot: bad}
    assessment = assess_month("app", march, both, (), WorkingDayCalendar())
    assert [s.slot_ms for s in assessment.unavailable] == [last_march_slot]
    april = assess_month("app", calendar_month(2019, 4), both, (), WorkingDayCalendar())
    assert [s.slot_ms for s in april.unavailable] == [first_april_slot]


@pytest.mark.parametrize(
    ("requests", "successes", "unavailable"),
    [
        (100, 99, False),  # exactly 99% is available
        (100, 98, True),
        (100_000, 98_999, True),  # 98.999%
        (100_000, 99_000, False),
        (1, 0, True),
        (1, 1, False),
        (0, 0, False),  # no requests: available
    ],
)
def test_slot_verdict_is_exact(requests: int, successes: int, unavailable: bool) -> None:
    assert judge_slot(SlotCounts(requests, successes)).unavailable is unavailable


def test_zero_traffic_slot_has_no_rate() -> None:
    verdict = judge_slot(SlotCounts(0, 0))
    assert verdict.success_rate is None and not verdict.data_quality_issue


# §3 Service months


def test_three_months_from_17_march_gives_four_service_months() -> None:
    months = Subscription(date(2019, 3, 17), 3).service_months()
    assert [(m.first_day, m.last_day) for m in months] == [
        (date(2019, 3, 17), date(2019, 3, 31)),
        (date(2019, 4, 1), date(2019, 4, 30)),
        (date(2019, 5, 1), date(2019, 5, 31)),
        (date(2019, 6, 1), date(2019, 6, 16)),
    ]
    assert [m.days for m in months] == [15, 30, 31, 16]


def test_subscription_from_the_31st_runs_to_the_end_of_a_shorter_month() -> None:
    assert Subscription(date(2019, 1, 31), 1).last_day == date(2019, 2, 28)
    assert Subscription(date(2020, 1, 31), 1).last_day == date(2020, 2, 29)
    assert Subscription(date(2019, 1, 30), 2).last_day == date(2019, 3, 29)


def test_no_subscription_means_the_calendar_month() -> None:
    assert service_months_in(2019, 2, ()) == [ServiceMonth(date(2019, 2, 1), date(2019, 2, 28))]


def test_renewal_puts_two_service_months_in_one_calendar_month() -> None:
    subs = (Subscription(date(2019, 3, 17), 3), Subscription(date(2019, 6, 17), 1))
    assert [str(m) for m in service_months_in(2019, 6, subs)] == ["2019-06-01..2019-06-16", "2019-06-17..2019-06-30"]
    assert service_months_in(2019, 9, subs) == []


@pytest.mark.parametrize(("days", "minutes"), [(15, 21_600), (31, 44_640), (1, 1_440), (28, 40_320)])
def test_total_minutes(days: int, minutes: int) -> None:
    month = ServiceMonth(date(2019, 3, 1), date(2019, 3, days))
    assert month.total_minutes == minutes


# §4 Monthly availability


def test_march_2019_worked_example() -> None:
    march = calendar_month(2019, 3)
    value = availability(march, unavailable_slots=6)
    assert value == 1 - Fraction(30, 44_640)
    assert display_percent(value) == "99.93%"
    assert meets_target(value)


def test_display_truncates_never_rounds_up_across_a_threshold() -> None:
    assert display_percent(Fraction(998992, 1_000_000)) == "99.89%"
    assert display_percent(Fraction(999999, 1_000_000)) == "99.99%"
    assert display_percent(Fraction(1)) == "100.00%"


def test_error_budget_is_8_for_every_whole_month_and_the_9th_breaches() -> None:
    for year, month in [(2019, 2), (2020, 2), (2019, 4), (2019, 3)]:
        whole = calendar_month(year, month)
        assert slots_allowed(whole) == 8
        assert meets_target(availability(whole, 8))
        assert not meets_target(availability(whole, 9))


def test_error_budget_of_partial_months() -> None:
    fifteen = ServiceMonth(date(2019, 3, 17), date(2019, 3, 31))
    assert slots_allowed(fifteen) == 4
    assert meets_target(availability(fifteen, 4)) and not meets_target(availability(fifteen, 5))
    one_day = ServiceMonth(date(2019, 6, 16), date(2019, 6, 16))
    assert slots_allowed(one_day) == 0
    assert not meets_target(availability(one_day, 1))
    budget = error_budget(one_day, 1)
    assert (budget.slots_allowed, budget.slots_used, budget.slots_left) == (0, 1, 0)


def test_one_day_month_single_bad_slot_owes_compensation() -> None:
    one_day = ServiceMonth(date(2019, 6, 16), date(2019, 6, 16))
    slot = at("2019-06-16T12:00:00+08:00")
    result = assess_month("app", one_day, {slot: SlotCounts(100, 90)}, (), WorkingDayCalendar(), Decimal("100.00"))
    assert not result.meets_sla
    assert result.availability == 1 - Fraction(5, 1440)
    assert result.compensation_percent == 10  # 99.65%
    assert result.voucher == Decimal("10.00")


# §5 Compensation and §6 claims


@pytest.mark.parametrize(
    ("slots", "percent"),
    [(0, 0), (7, 0), (8, 10), (36, 10), (37, 20), (72, 20), (73, 50)],
)
def test_25_day_month_tiers_with_inclusive_lower_bounds(slots: int, percent: int) -> None:
    month = ServiceMonth(date(2019, 4, 1), date(2019, 4, 25))  # 36,000 minutes, budget 7
    value = availability(month, slots)
    assert compensation_percent(value) == percent


def test_25_day_month_exact_boundaries() -> None:
    month = ServiceMonth(date(2019, 4, 1), date(2019, 4, 25))
    assert availability(month, 36) == Fraction(995, 1000)
    assert availability(month, 72) == Fraction(99, 100)


def test_voucher_is_decimal_and_capped_at_the_fee() -> None:
    assert voucher(Decimal("1000.00"), 10) == Decimal("100.00")
    assert voucher(Decimal("0.05"), 50) == Decimal("0.03")  # half up to the cent
    assert voucher(Decimal("0.01"), 50) <= Decimal("0.01")
    assert voucher(Decimal("80"), 100) == Decimal("80")
    with pytest.raises(ValueError):
        voucher(Decimal("-1"), 10)


@pytest.mark.parametrize(
    ("month", "opens", "closes"),
    [
        (calendar_month(2019, 3), date(2019, 4, 9), date(2019, 5, 30)),  # Qingming 04-05
        (calendar_month(2019, 9), date(2019, 10, 13), date(2019, 11, 29)),  # Sat 10-12 is a working day
        (calendar_month(2019, 1), date(2019, 2, 13), date(2019, 4, 1)),  # Spring Festival, make-up weekend
        (ServiceMonth(date(2019, 6, 1), date(2019, 6, 16)), date(2019, 7, 6), date(2019, 8, 15)),
    ],
)
def test_claim_windows_follow_the_china_calendar(month: ServiceMonth, opens: date, closes: date) -> None:
    window = claim_window(month, WorkingDayCalendar())
    assert (window.opens, window.closes, window.estimated) == (opens, closes, False)


def test_claim_window_in_an_uncovered_year_is_estimated_on_weekdays() -> None:
    window = claim_window(calendar_month(2026, 12), WorkingDayCalendar())
    # January 2027: Fri 1 is a weekday, so weekdays 1, 4, 5, 6, 7 -> opens Fri 8.
    assert (window.opens, window.estimated) == (date(2027, 1, 8), True)
    assert window.closes == date(2026, 12, 31) + timedelta(days=60)


def test_user_supplied_year_replaces_the_estimate() -> None:
    official = OfficialYear(
        2027,
        holidays=frozenset({date(2027, 1, 1), date(2027, 1, 4)}),
        makeup_workdays=frozenset({date(2027, 1, 9)}),
    )
    window = claim_window(calendar_month(2026, 12), WorkingDayCalendar([official]))
    # Working days: 5, 6, 7, 8, Sat 9 -> opens Sunday 10.
    assert (window.opens, window.estimated) == (date(2027, 1, 10), False)


def test_claim_window_known_year_is_not_estimated() -> None:
    window = claim_window(calendar_month(2026, 9), WorkingDayCalendar())
    assert not window.estimated
    # October 2026: National Day 1-7 off, Saturday 10-10 a make-up working day;
    # working days 8, 9, Sat 10, 12, 13 -> opens 14.
    assert window.opens == date(2026, 10, 14)


# §7 Exemptions


def test_a_slot_touched_by_an_exemption_in_any_part_is_exempt() -> None:
    exemption = Exemption(
        at("2019-03-10T10:04:00+08:00"), at("2019-03-10T10:10:01+08:00"), None, "announced-maintenance", "upgrade"
    )
    slot = lambda hhmm: at(f"2019-03-10T{hhmm}:00+08:00")  # noqa: E731
    assert not exemption.exempts("a", slot("09:55"))
    assert exemption.exempts("a", slot("10:00"))
    assert exemption.exempts("a", slot("10:05"))
    assert exemption.exempts("a", slot("10:10"))  # one second of it
    assert not exemption.exempts("a", slot("10:15"))


def test_exemption_for_one_app_leaves_the_others() -> None:
    exemption = Exemption(at("2019-03-10T10:00:00+08:00"), at("2019-03-10T11:00:00+08:00"), "a", "customer-fault")
    assert exemption.exempts("a", at("2019-03-10T10:30:00+08:00"))
    assert not exemption.exempts("b", at("2019-03-10T10:30:00+08:00"))


def test_exempt_slots_do_not_count_and_are_listed_with_their_clause() -> None:
    march = calendar_month(2019, 3)
    bad = {at("2019-03-10T10:00:00+08:00") + i * SLOT_MS: SlotCounts(100, 98) for i in range(12)}
    exemption = Exemption(
        at("2019-03-10T10:30:00+08:00"), at("2019-03-10T11:00:00+08:00"), None, "force-majeure", "typhoon"
    )
    result = assess_month("a", march, bad, (exemption,), WorkingDayCalendar())
    assert len(result.unavailable) == 6 and len(result.exempt) == 6
    assert result.availability_display == "99.93%"
    [period] = result.exempt_periods
    assert period.exemption == exemption and period.slots == 6
    assert period.start_ms == at("2019-03-10T10:30:00+08:00") and period.end_ms == at("2019-03-10T11:00:00+08:00")


def test_unavailable_periods_merge_consecutive_slots_only() -> None:
    base = at("2019-03-10T10:00:00+08:00")
    counts = {
        base: SlotCounts(100, 98),
        base + SLOT_MS: SlotCounts(100, 90),
        base + 2 * SLOT_MS: SlotCounts(100, 99),  # available: breaks the run
        base + 3 * SLOT_MS: SlotCounts(50, 40),
    }
    result = assess_month("a", calendar_month(2019, 3), counts, (), WorkingDayCalendar())
    periods = result.unavailable_periods
    assert [(p.start_ms, p.end_ms, p.slots) for p in periods] == [
        (base, base + 2 * SLOT_MS, 2),
        (base + 3 * SLOT_MS, base + 4 * SLOT_MS, 1),
    ]
    assert periods[0].lowest_success_rate == Fraction(90, 100)
    assert periods[1].lowest_success_rate == Fraction(4, 5)


def test_time_is_timezone_aware() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        to_epoch_ms(datetime(2019, 3, 10, 10, 0))
    assert to_epoch_ms(datetime(2019, 3, 10, 2, 0, tzinfo=timezone.utc)) == at("2019-03-10T10:00:00+08:00")
