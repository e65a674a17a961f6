"""The coverage measure's edges: nothing measured yet, figures as of before the month, after it, and one minute."""

from __future__ import annotations

from stream.sla.coverage import MINUTE_MS, Coverage, MinuteMap

START = 1_793_462_400_000  # 2026-11-01 00:00 in Shanghai
END = START + 30 * 1440 * MINUTE_MS


def covered(*minutes: int) -> MinuteMap:
    m = MinuteMap(START, END)
    m.add_minutes(START // MINUTE_MS + n for n in minutes)
    return m


def test_nothing_measured_yet_is_neither_complete_nor_silent() -> None:
    c = Coverage.measure(covered(0, 1), START, END, START + 30_000, 15)  # as of 00:00:30: minute 0 not over yet
    assert (c.end_ms, c.as_of_ms, c.running, c.has_data, c.silent, c.complete) == (START, START, True, False, (), False)


def test_figures_as_of_before_the_month_measure_nothing_and_keep_their_time() -> None:
    c = Coverage.measure(covered(0), START, END, START - 3 * MINUTE_MS, 15)
    assert (c.end_ms, c.as_of_ms, c.running, c.complete) == (START, START - 3 * MINUTE_MS, True, False)


def test_figures_as_of_after_the_month_measure_all_of_it() -> None:
    c = Coverage.measure(covered(*range(0, 30 * 1440, 10)), START, END, END + 86_400_000, 15)
    assert (c.end_ms, c.running, c.complete, c.last_ms) == (END, False, True, END - 9 * MINUTE_MS)
    assert c.silent_minutes == 0


def test_a_run_of_exactly_the_threshold_is_silent_and_one_less_is_not() -> None:
    fifteen = Coverage.measure(covered(0, 16), START, START + 17 * MINUTE_MS, END, 15)
    fourteen = Coverage.measure(covered(0, 15), START, START + 16 * MINUTE_MS, END, 15)
    assert [(p.start_ms - START) // MINUTE_MS for p in fifteen.silent] == [1] and fifteen.silent[0].minutes == 15
    assert fourteen.complete
