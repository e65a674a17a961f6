"""Properties of the pure SLA core (stream/sla), checked with hypothesis against the agreement (docs/sla.md).

Every oracle here is written from the spec's own words (exact fractions,
brute force over days, seconds or sets), never by calling the function under
test a second way. No mocks: the real functions, with generated inputs.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream.sla.assessment import assess_month
from stream.sla.availability import availability, display_percent, meets_target, slots_allowed
from stream.sla.claims import WorkingDayCalendar
from stream.sla.compensation import compensation_percent, voucher
from stream.sla.counting import SlotTally
from stream.sla.exemptions import CLAUSES, Exemption, exemption_for
from stream.sla.months import ServiceMonth, Subscription, calendar_month, service_months_in
from stream.sla.policy import SlaPolicy
from stream.sla.slots import day_span_ms, local_time, slot_start_ms, slots_between, to_epoch_ms
from stream.sla.verdict import SlotCounts, judge_slot

SETTINGS = settings(max_examples=150, deadline=None)
FEW = settings(max_examples=60, deadline=None)

SHANGHAI = ZoneInfo("Asia/Shanghai")
SLOT = 5 * 60 * 1000  # ms, from the spec, not from the code
MINUTES_PER_DAY = 24 * 60
TARGET = Fraction(999, 1000)
SLOT_MIN = Fraction(99, 100)
CALENDAR = WorkingDayCalendar()


def epoch_ms(moment: datetime) -> int:
    """Epoch ms of an aware datetime with whole seconds, computed without the code under test."""
    assert moment.tzinfo is not None and moment.microsecond == 0
    return int(moment.timestamp()) * 1000


def local_midnight_ms(day: date, tz: ZoneInfo = SHANGHAI) -> int:
    return epoch_ms(datetime.combine(day, time(0), tz))


SLOT0 = epoch_ms(datetime(2019, 3, 10, 10, 0, tzinfo=SHANGHAI))


@st.composite
def service_months(draw: st.DrawFn, first_year: int = 1990, last_year: int = 2100) -> ServiceMonth:
    """Any whole or partial service month (1..31 days) inside one calendar month."""
    year = draw(st.integers(first_year, last_year))
    month = draw(st.integers(1, 12))
    length = calendar.monthrange(year, month)[1]
    first = draw(st.integers(1, length))
    last = draw(st.integers(first, length))
    return ServiceMonth(date(year, month, first), date(year, month, last))


def spec_availability(month: ServiceMonth, unavailable_slots: int) -> Fraction:
    """docs/sla.md §4: 1 − unavailable minutes / (days × 24 × 60), each slot 5 minutes."""
    days = (month.last_day - month.first_day).days + 1
    return 1 - Fraction(5 * unavailable_slots, days * MINUTES_PER_DAY)


def spec_percent(value: Fraction) -> int:
    """docs/sla.md §5 table, lower bounds inclusive."""
    if value >= Fraction(999, 1000):
        return 0
    if value >= Fraction(995, 1000):
        return 10
    if value >= Fraction(99, 100):
        return 20
    return 50


def spec_unavailable(counts: SlotCounts) -> bool:
    """docs/sla.md §2: at least one request and successes * 100 < requests * 99 (more successes: rate 1)."""
    return counts.requests > 0 and counts.successes * 100 < counts.requests * 99


def overlaps(exemption: Exemption, app_id: str, slot_ms: int) -> bool:
    """Interval overlap of the window with ``[slot, slot + 5 min)``, for the exemption's app(s).

    Checked against a brute force over every second in ``test_exemption_matches_brute_force``.
    """
    in_scope = exemption.app_id in (None, app_id)
    return in_scope and exemption.start_ms < slot_ms + SLOT and slot_ms < exemption.end_ms


# §4 availability, budget, display


@SETTINGS
@given(service_months(), st.data())
def test_availability_never_rises_when_an_unavailable_slot_is_added(month: ServiceMonth, data: st.DataObject) -> None:
    slots_in_month = month.days * 288
    k = data.draw(st.integers(0, slots_in_month - 1), label="unavailable slots")
    assert availability(month, k) == spec_availability(month, k)
    assert availability(month, k + 1) < availability(month, k)
    assert availability(month, k + 1) == spec_availability(month, k + 1)


def test_every_whole_calendar_month_1990_to_2100_allows_exactly_eight_slots() -> None:
    wrong = []
    for year in range(1990, 2101):
        for month_number in range(1, 13):
            month = calendar_month(year, month_number)
            days = calendar.monthrange(year, month_number)[1]
            checks = (
                month.first_day == date(year, month_number, 1) and month.days == days,
                availability(month, 8) == spec_availability(month, 8) >= TARGET,
                meets_target(availability(month, 8)),
                availability(month, 9) == spec_availability(month, 9) < TARGET,
                not meets_target(availability(month, 9)),
                slots_allowed(month) == 8,
            )
            if not all(checks):
                wrong.append((year, month_number, checks))
    assert wrong == []


def brute_force_slots_allowed(month: ServiceMonth, target: Fraction) -> int:
    """The largest k (counting up one slot at a time) whose availability still meets ``target``."""
    k = 0
    while k < month.days * 288 and spec_availability(month, k + 1) >= target:
        k += 1
    return k


@SETTINGS
@given(
    service_months(),
    st.fractions(min_value=Fraction(99, 100), max_value=1, max_denominator=100_000),
)
@example(ServiceMonth(date(2019, 3, 1), date(2019, 3, 15)), TARGET)  # 15 days: 4 (§4)
@example(ServiceMonth(date(2019, 3, 5), date(2019, 3, 5)), TARGET)  # 1 day: 0 (§4)
@example(ServiceMonth(date(2019, 3, 1), date(2019, 3, 25)), Fraction(995, 1000))  # 36 slots is exactly 99.5%
def test_slots_allowed_is_the_largest_count_that_meets_the_target(month: ServiceMonth, target: Fraction) -> None:
    assert slots_allowed(month) == brute_force_slots_allowed(month, TARGET)
    policy = SlaPolicy(availability_target=target, compensation_tiers=())
    assert slots_allowed(month, policy) == brute_force_slots_allowed(month, target)


@st.composite
def availabilities(draw: st.DrawFn) -> Fraction:
    """Availabilities of real months, and arbitrary fractions in [0, 1]."""
    if draw(st.booleans()):
        month = draw(service_months())
        return spec_availability(month, draw(st.integers(0, month.days * 288)))
    return draw(st.fractions(min_value=0, max_value=1, max_denominator=10**7))


@SETTINGS
@given(availabilities())
@example(Fraction(998992, 1_000_000))  # 99.8992% may not show as 99.90% (§4)
@example(1 - Fraction(45, 44640))  # nine slots in a 31-day month
@example(Fraction(1))
@example(Fraction(0))
def test_display_percent_truncates_never_above_and_within_a_hundredth(value: Fraction) -> None:
    text = display_percent(value)
    assert re.fullmatch(r"\d{1,3}\.\d{2}%", text), text
    shown = Fraction(text[:-1]) / 100
    assert shown <= value
    assert value - shown < Fraction(1, 100) / 100  # 0.01 percentage points


# §1–§2 slot verdicts


@st.composite
def slot_counts(draw: st.DrawFn) -> SlotCounts:
    """Counts with successes <= requests, many of them near the 99% line."""
    requests = draw(st.integers(1, 10**6))
    near = requests * 99 // 100
    successes = draw(st.one_of(st.integers(0, requests), st.integers(max(0, near - 2), min(requests, near + 2))))
    return SlotCounts(requests, successes)


@SETTINGS
@given(slot_counts())
@example(SlotCounts(100, 99))
@example(SlotCounts(100, 98))
@example(SlotCounts(1000, 989))
@example(SlotCounts(1, 0))
def test_judge_slot_agrees_with_exact_fraction_comparison(counts: SlotCounts) -> None:
    rate = Fraction(counts.successes, counts.requests)
    verdict = judge_slot(counts)
    assert verdict.unavailable == (rate < Fraction(99, 100))
    assert verdict.success_rate == rate
    assert not verdict.data_quality_issue


@SETTINGS
@given(st.integers(1, 10**7))
def test_exactly_99_percent_is_available_and_one_less_success_is_not(n: int) -> None:
    assert not judge_slot(SlotCounts(100 * n, 99 * n)).unavailable
    assert judge_slot(SlotCounts(100 * n, 99 * n - 1)).unavailable


@SETTINGS
@given(slot_counts(), st.fractions(min_value=Fraction(1, 1000), max_value=1, max_denominator=10_000))
def test_judge_slot_uses_the_configured_threshold_exactly(counts: SlotCounts, threshold: Fraction) -> None:
    verdict = judge_slot(counts, SlaPolicy(slot_success_min=threshold))
    assert verdict.unavailable == (Fraction(counts.successes, counts.requests) < threshold)


def test_a_slot_without_requests_is_available() -> None:
    verdict = judge_slot(SlotCounts(0, 0))
    assert not verdict.unavailable and verdict.success_rate is None and not verdict.data_quality_issue


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_more_successes_than_requests_is_never_unavailable_and_flags_data_quality(requests: int, extra: int) -> None:
    verdict = judge_slot(SlotCounts(requests, requests + extra))
    assert not verdict.unavailable
    assert verdict.data_quality_issue
    if requests:
        assert verdict.success_rate == 1
    else:
        assert verdict.success_rate in (None, 1)


# §5 compensation


@SETTINGS
@given(availabilities(), availabilities())
@example(Fraction(999, 1000), Fraction(999, 1000) - Fraction(1, 10**9))
@example(Fraction(995, 1000), Fraction(995, 1000) - Fraction(1, 10**9))
@example(Fraction(99, 100), Fraction(99, 100) - Fraction(1, 10**9))
@example(1 - Fraction(36 * 5, 25 * MINUTES_PER_DAY), 1 - Fraction(72 * 5, 25 * MINUTES_PER_DAY))
def test_compensation_follows_the_table_and_never_rises_with_availability(a: Fraction, b: Fraction) -> None:
    assert compensation_percent(a) == spec_percent(a)
    assert compensation_percent(b) == spec_percent(b)
    low, high = sorted((a, b))
    assert compensation_percent(low) >= compensation_percent(high)


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        (Fraction(999, 1000), 0),
        (Fraction(995, 1000), 10),  # exactly 99.5%: the 10% tier
        (Fraction(99, 100), 20),  # exactly 99.0%: the 20% tier
        (Fraction(999, 1000) - Fraction(1, 10**12), 10),
        (Fraction(995, 1000) - Fraction(1, 10**12), 20),
        (Fraction(99, 100) - Fraction(1, 10**12), 50),
    ],
)
def test_tier_boundaries_are_inclusive_on_the_lower_side(value: Fraction, percent: int) -> None:
    assert compensation_percent(value) == percent


CENT = Decimal("0.01")
cent_fees = st.one_of(
    st.integers(0, 10**11).map(lambda cents: Decimal(cents).scaleb(-2)),  # 1234.56
    st.integers(0, 10**9).map(Decimal),  # 1234 (whole yuan, no cents written)
)


def assert_voucher_is_cents_within_fee(fee: Decimal, percent: int) -> None:
    amount = voucher(fee, percent)
    assert isinstance(amount, Decimal)
    assert amount <= fee
    assert amount == amount.quantize(CENT) and amount.as_tuple().exponent == -2, amount
    assert abs(amount - fee * percent / 100) <= Decimal("0.005")


@SETTINGS
@given(cent_fees, st.integers(0, 100))
@example(Decimal("1234.56"), 20)
@example(Decimal("0.01"), 50)
@example(Decimal("0.00"), 100)
def test_voucher_is_whole_cents_and_never_exceeds_the_fee(fee: Decimal, percent: int) -> None:
    assert_voucher_is_cents_within_fee(fee, percent)


@FEW
@given(st.integers(0, 10**8).map(lambda mills: Decimal(mills).scaleb(-3)), st.integers(0, 100))
@example(Decimal("0.005"), 100)
def test_a_fee_in_fractions_of_a_cent_is_refused(fee: Decimal, percent: int) -> None:
    if fee == fee.quantize(Decimal("0.01")):
        assert_voucher_is_cents_within_fee(fee, percent)
    else:
        with pytest.raises(ValueError, match="whole cents"):
            voucher(fee, percent)


# §2 slots


ERA = st.integers(
    epoch_ms(datetime(1970, 1, 1, tzinfo=timezone.utc)), epoch_ms(datetime(2100, 1, 1, tzinfo=timezone.utc))
)
QUARTER_HOUR_ZONES = [
    "Asia/Shanghai",
    "Asia/Kolkata",  # +5:30
    "Asia/Kathmandu",  # +5:45
    "UTC",
    "America/St_Johns",  # -3:30 with daylight saving
    "Australia/Lord_Howe",  # +10:30, half-hour daylight saving
    "Europe/Berlin",
]


def assert_slot_holds(ts: int, tz: ZoneInfo) -> int:
    start = slot_start_ms(ts, tz)
    assert start <= ts < start + SLOT
    assert slot_start_ms(start, tz) == start  # the slot of a slot start is itself
    assert slot_start_ms(start + SLOT - 1, tz) == start
    assert slot_start_ms(start + SLOT, tz) == start + SLOT
    assert start % 1000 == 0
    local = datetime.fromtimestamp(start // 1000, tz)
    assert (local.minute % 5, local.second) == (0, 0), local
    return start


@SETTINGS
@given(ERA, st.sampled_from(QUARTER_HOUR_ZONES))
@example(epoch_ms(datetime(2019, 3, 31, 16, 0, tzinfo=timezone.utc)) - 1, "Asia/Shanghai")
def test_slot_holds_the_instant_and_is_stable(ts: int, zone: str) -> None:
    start = assert_slot_holds(ts, ZoneInfo(zone))
    # Quarter-hour offsets: the same instants in every such zone, multiples of 5 min in epoch terms.
    assert start == ts - ts % SLOT


@SETTINGS
@given(ERA, st.sampled_from(sorted(available_timezones())))
@example(epoch_ms(datetime(1971, 6, 1, tzinfo=timezone.utc)) + 123_456, "Africa/Monrovia")  # UTC-0:44:30 until 1972
def test_slots_follow_the_local_clock_in_any_zone(ts: int, zone: str) -> None:
    assert_slot_holds(ts, ZoneInfo(zone))


@SETTINGS
@given(st.integers(0, 288 * 365 * 3), st.integers(0, SLOT - 1), st.sampled_from(["Asia/Kolkata", "Asia/Kathmandu"]))
def test_slots_in_kolkata_and_kathmandu_start_on_local_five_minute_marks(
    slot_number: int, into: int, zone: str
) -> None:
    """Walk from a local midnight: every slot start reads hh:m0 or hh:m5, second 0, locally."""
    tz = ZoneInfo(zone)
    midnight = local_midnight_ms(date(2024, 1, 1), tz)
    ts = midnight + slot_number * SLOT + into
    start = slot_start_ms(ts, tz)
    assert start == midnight + slot_number * SLOT
    local = datetime.fromtimestamp(start // 1000, tz)
    assert (local.minute % 5, local.second, local.microsecond) == (0, 0, 0)


@SETTINGS
@given(ERA.map(lambda ts: ts - ts % 1000), st.sampled_from(QUARTER_HOUR_ZONES))
def test_epoch_ms_of_whole_seconds_round_trips_through_local_time(ts: int, zone: str) -> None:
    assert to_epoch_ms(local_time(ts, ZoneInfo(zone))) == ts


@SETTINGS
@given(ERA, st.sampled_from(QUARTER_HOUR_ZONES))
@example(1097141615251, "Asia/Shanghai")  # 2004-10-07T17:33:35.251+08:00
@example(2181874393016, "Asia/Shanghai")  # 2039-02-21T12:13:13.016+08:00
def test_epoch_ms_to_the_millisecond_round_trips_through_local_time(ts: int, zone: str) -> None:
    moment = datetime.fromtimestamp(ts // 1000, ZoneInfo(zone)) + timedelta(milliseconds=ts % 1000)
    assert to_epoch_ms(moment) == ts
    assert to_epoch_ms(local_time(ts, ZoneInfo(zone))) == ts


@SETTINGS
@given(st.dates(date(1992, 1, 1), date(2100, 12, 31)))  # Shanghai has had no daylight saving since 1992
def test_a_shanghai_day_has_288_slots_from_midnight_to_2355(day: date) -> None:
    midnight, next_midnight = local_midnight_ms(day), local_midnight_ms(day + timedelta(days=1))
    assert day_span_ms(day, day, SHANGHAI) == (midnight, next_midnight)
    slots = list(slots_between(midnight, next_midnight, SHANGHAI))
    assert len(slots) == 288
    assert slots[0] == midnight and slots[-1] == next_midnight - SLOT
    assert all(b - a == SLOT for a, b in pairwise(slots))
    assert {datetime.fromtimestamp(s // 1000, SHANGHAI).date() for s in slots} == {day}


# §3 service months


def months_later(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


@SETTINGS
@given(st.dates(date(1990, 1, 1), date(2090, 12, 31)), st.integers(1, 60))
@example(date(2019, 3, 17), 3)
@example(date(2019, 1, 31), 1)
@example(date(2020, 2, 29), 12)
def test_subscription_service_months_tile_the_subscription(activation: date, months: int) -> None:
    subscription = Subscription(activation, months)
    pieces = subscription.service_months()
    last_day = subscription.last_day
    assert pieces[0].first_day == activation and pieces[-1].last_day == last_day
    for earlier, later in pairwise(pieces):
        assert later.first_day == earlier.last_day + timedelta(days=1)  # no gap, no overlap
    for piece in pieces:
        assert (piece.first_day.year, piece.first_day.month) == (piece.last_day.year, piece.last_day.month)
        assert service_months_in(piece.first_day.year, piece.first_day.month, [subscription]) == [piece]
    covered = [piece.first_day + timedelta(days=i) for piece in pieces for i in range(piece.days)]
    assert covered == [activation + timedelta(days=i) for i in range((last_day - activation).days + 1)]
    assert sum(piece.days for piece in pieces) == (last_day - activation).days + 1
    assert sum(piece.total_minutes for piece in pieces) == len(covered) * MINUTES_PER_DAY
    year, month = months_later(activation, months)
    if activation.day <= 28:  # the same date N months later exists: the day before it (§3)
        assert last_day == date(year, month, activation.day) - timedelta(days=1)
        assert len(pieces) == months + (activation.day != 1)
    else:  # that date may not exist: it ends in the month before it, or on the last day of that month
        assert last_day <= date(year, month, calendar.monthrange(year, month)[1])
        assert last_day >= date(year, month, 1) - timedelta(days=1)


# §6 exemptions


@st.composite
def second_grid_windows(draw: st.DrawFn) -> Exemption:
    """Windows around SLOT0 whose ends fall on whole seconds."""
    start = SLOT0 + 1000 * draw(st.integers(-1200, 1200))
    return Exemption(
        start_ms=start,
        end_ms=start + 1000 * draw(st.integers(1, 1500)),
        app_id=draw(st.sampled_from([None, "a", "b"])),
        clause=draw(st.sampled_from(sorted(CLAUSES))),
    )


def brute_force_exempts(exemption: Exemption, app_id: str, slot_ms: int) -> bool:
    """Some second of the slot lies in the window (exact: every end is on the second grid)."""
    if exemption.app_id not in (None, app_id):
        return False
    return any(exemption.start_ms <= t < exemption.end_ms for t in range(slot_ms, slot_ms + SLOT, 1000))


@SETTINGS
@given(st.lists(second_grid_windows(), max_size=4), st.sampled_from(["a", "b"]), st.integers(-5, 5))
def test_exemption_matches_brute_force(exemptions: list[Exemption], app_id: str, slot_index: int) -> None:
    slot_ms = SLOT0 + slot_index * SLOT
    for exemption in exemptions:
        assert exemption.exempts(app_id, slot_ms) == brute_force_exempts(exemption, app_id, slot_ms)
        assert overlaps(exemption, app_id, slot_ms) == brute_force_exempts(exemption, app_id, slot_ms)
    first = next((e for e in exemptions if brute_force_exempts(e, app_id, slot_ms)), None)
    assert exemption_for(app_id, slot_ms, exemptions) is first


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (-60_000, 0),  # ends exactly where the slot starts
        (-60_000, 1),  # takes its first millisecond
        (SLOT - 1, SLOT),  # its last millisecond only
        (SLOT, SLOT + 60_000),  # starts exactly where the slot ends
        (1, 2),
        (-SLOT, 2 * SLOT),
    ],
)
def test_exemption_edges_to_the_millisecond(start: int, end: int) -> None:
    exemption = Exemption(SLOT0 + start, SLOT0 + end, None, "force-majeure")
    every_ms = any(exemption.start_ms <= t < exemption.end_ms for t in range(SLOT0, SLOT0 + SLOT))
    assert exemption.exempts("a", SLOT0) == every_ms


# §1 counting


event_keys = st.tuples(
    st.sampled_from(["request", "success"]),
    st.sampled_from(["a", "b"]),
    st.sampled_from([f"e-{i}" for i in range(5)]),
    st.integers(SLOT0 - 3 * SLOT, SLOT0 + 3 * SLOT),
)


@SETTINGS
@given(st.lists(event_keys, max_size=25), st.data())
def test_slot_tally_counts_each_event_once_whatever_the_order(
    events: list[tuple[str, str, str, int]], data: st.DataObject
) -> None:
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=25), label="redeliveries") if events else []
    deliveries = data.draw(st.permutations(events + repeats), label="delivery order")
    window_slots = data.draw(st.none() | st.tuples(st.integers(-4, 4), st.integers(-4, 4)), label="window")
    window = None if window_slots is None else (SLOT0 + window_slots[0] * SLOT, SLOT0 + window_slots[1] * SLOT)

    tally = SlotTally(SHANGHAI, window)
    added = [tally.add(kind, app_id, event_id, ts) for kind, app_id, event_id, ts in deliveries]

    seen: set[tuple[str, int, str, str]] = set()
    expected_added, outside = [], 0
    for kind, app_id, event_id, ts in deliveries:
        key = (app_id, ts - ts % SLOT, kind, event_id)
        if window is not None and not window[0] <= key[1] < window[1]:
            outside += 1
            expected_added.append(False)
            continue
        expected_added.append(key not in seen)
        seen.add(key)
    assert added == expected_added
    assert tally.outside_window == outside
    assert tally.duplicates == len(deliveries) - outside - len(seen)
    for app_id in ("a", "b"):
        slots = {slot for app, slot, _, _ in seen if app == app_id}
        expected = {
            slot: SlotCounts(
                requests=sum(1 for k in seen if k[:3] == (app_id, slot, "request")),
                successes=sum(1 for k in seen if k[:3] == (app_id, slot, "success")),
            )
            for slot in slots
        }
        assert tally.counts(app_id) == expected


# assessment: the rules together


@st.composite
def month_cases(draw: st.DrawFn) -> tuple[ServiceMonth, dict[int, SlotCounts], list[Exemption], Exemption]:
    month = draw(service_months(2019, 2025))
    start = local_midnight_ms(month.first_day)
    slots_in_month = month.days * 288
    indices = draw(st.lists(st.integers(-20, slots_in_month + 20), unique=True, max_size=40), label="slots")
    counts = {}
    for index in indices:
        requests = draw(st.integers(0, 300))
        near = requests * 99 // 100
        successes = draw(st.one_of(st.integers(0, requests + 3), st.integers(max(0, near - 1), near + 1)))
        counts[start + index * SLOT] = SlotCounts(requests, successes)

    def window() -> Exemption:
        begin = start + draw(st.integers(-3600_000, slots_in_month * SLOT))
        return Exemption(
            begin,
            begin + draw(st.integers(1, 4 * 3600_000)),
            draw(st.sampled_from([None, "app", "other"])),
            draw(st.sampled_from(sorted(CLAUSES))),
        )

    exemptions = [window() for _ in range(draw(st.integers(0, 3), label="exemptions"))]
    return month, counts, exemptions, window()


@FEW
@given(month_cases())
def test_assess_month_accounts_for_every_unavailable_slot(
    case: tuple[ServiceMonth, dict[int, SlotCounts], list[Exemption], Exemption],
) -> None:
    month, counts, exemptions, _ = case
    start = local_midnight_ms(month.first_day)
    end = local_midnight_ms(month.last_day + timedelta(days=1))
    inside = {slot: c for slot, c in counts.items() if start <= slot < end}
    bad = {slot for slot, c in inside.items() if spec_unavailable(c)}
    exempt = {slot for slot in bad if any(overlaps(e, "app", slot) for e in exemptions)}

    result = assess_month("app", month, counts, exemptions, CALENDAR)

    assert {s.slot_ms for s in result.unavailable} == bad - exempt
    assert {s.slot_ms for s in result.exempt} == exempt
    assert len(result.unavailable) + len(result.exempt) == len(bad)
    assert all(s.exemption is not None and overlaps(s.exemption, "app", s.slot_ms) for s in result.exempt)
    assert result.requests == sum(c.requests for c in inside.values())
    assert result.successes == sum(c.successes for c in inside.values())
    assert result.data_quality_slots == sum(1 for c in inside.values() if c.successes > c.requests)
    assert result.availability == spec_availability(month, len(bad - exempt))
    assert result.meets_sla == (result.availability >= TARGET)
    assert result.compensation_percent == spec_percent(result.availability)
    assert result.budget.slots_used == len(bad - exempt)
    assert sum(p.slots for p in result.unavailable_periods) == len(bad - exempt)
    assert sum(p.slots for p in result.exempt_periods) == len(exempt)


@FEW
@given(month_cases(), st.booleans())
def test_adding_an_exemption_never_lowers_availability(
    case: tuple[ServiceMonth, dict[int, SlotCounts], list[Exemption], Exemption], first: bool
) -> None:
    month, counts, exemptions, extra = case
    before = assess_month("app", month, counts, exemptions, CALENDAR)
    after = assess_month("app", month, counts, [extra, *exemptions] if first else [*exemptions, extra], CALENDAR)
    assert after.availability >= before.availability
    assert {s.slot_ms for s in after.exempt} >= {s.slot_ms for s in before.exempt}
    assert {s.slot_ms for s in after.unavailable} <= {s.slot_ms for s in before.unavailable}
