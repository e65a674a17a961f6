"""Statements: the slot listing, its digest and the slot CSV agree with the month's figures (docs/statements.md).

The CSV is re-read as a customer would (the ``csv`` module, and ``cut`` and
``sha256sum`` in a shell) and compared with the JSON figures of the same
statement; the digest recomputed from it must be the one the statement prints.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from datetime import date
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from month_examples import covered_until

from stream.formats import statement_to_json
from stream.months_output import MonthsOutput
from stream.report import to_text
from stream.sla.claims import WorkingDayCalendar
from stream.sla.exemptions import Exemption
from stream.sla.months import ServiceMonth, calendar_month
from stream.sla.policy import SlaPolicy
from stream.sla.slots import SLOT_MS, day_start_ms
from stream.sla.verdict import SlotCounts, judge_slot
from stream.statements.listing import rate_text
from stream.statements.slot_csv import COLUMNS, DIGEST_PREFIX, write_csv
from stream.statements.statement import Statement, build_statement

TZ = ZoneInfo("Asia/Shanghai")
POLICY = SlaPolicy(timezone=TZ)
OCTOBER = calendar_month(2026, 10)
START_MS, END_MS = OCTOBER.span_ms(TZ)
SLOTS_IN_OCTOBER = (END_MS - START_MS) // SLOT_MS
MAINTENANCE = Exemption(
    day_start_ms(date(2026, 10, 14), TZ),
    day_start_ms(date(2026, 10, 15), TZ),
    None,
    "announced-maintenance",
    "n°7, «ok»",
)

slot_counts = st.builds(
    SlotCounts,
    requests=st.integers(0, 3000),
    successes=st.integers(0, 3000),
) | st.integers(1, 3000).flatmap(lambda n: st.builds(SlotCounts, st.just(n), st.integers(max(n - 40, 0), n)))
month_counts = st.dictionaries(
    st.integers(-300, SLOTS_IN_OCTOBER + 300).map(lambda i: START_MS + i * SLOT_MS), slot_counts, max_size=80
)


def statement_of(counts: dict[int, SlotCounts], month: ServiceMonth = OCTOBER, app_id: str = "1400000001") -> Statement:
    return build_statement(
        app_id,
        month,
        counts,
        (MAINTENANCE,),
        WorkingDayCalendar(),
        Decimal("1000.00"),
        POLICY,
        "report",
        **covered_until(month, POLICY.timezone),
    )


def csv_text(*statements: Statement) -> str:
    out = io.StringIO(newline="")
    write_csv(statements, out)
    return out.getvalue()


def recomputed_digest(text: str, app_id: str, service_month: str) -> str:
    """docs/statements.md's recipe, as a customer would run it on the CSV file."""
    listing = hashlib.sha256()
    for row in csv.reader(line for line in io.StringIO(text, newline="") if not line.startswith("#")):
        if row[:2] == [app_id, service_month]:
            listing.update((",".join(row[:6]) + "\n").encode("utf-8"))
    return listing.hexdigest()


@settings(max_examples=150, deadline=None)
@given(month_counts)
def test_csv_rows_re_read_equal_the_json_figures_and_give_the_digest(counts):
    statement = statement_of(counts)
    figures = statement_to_json(statement)
    text = csv_text(statement)
    body = [line for line in io.StringIO(text, newline="") if not line.startswith("#")]
    rows = list(csv.DictReader(body))
    assert text.splitlines()[0] == ",".join(COLUMNS)
    in_month = {s: c for s, c in counts.items() if START_MS <= s < END_MS and (c.requests or c.successes)}
    assert len(rows) == len(in_month), "one row per slot of the month with traffic, no other"
    assert sum(int(r["requests"]) for r in rows) == figures["requests"]
    assert sum(int(r["successes"]) for r in rows) == figures["successes"]
    verdicts = [r["verdict"] for r in rows]
    assert verdicts.count("unavailable") == figures["unavailable_slots"] == figures["error_budget"]["slots_used"]
    assert verdicts.count("exempt") == figures["exempt_slots"]
    assert verdicts.count("data-quality") == figures["data_quality_slots"]
    periods = figures["unavailable_periods"] + figures["exempt_periods"]
    assert sum(p["slots"] for p in periods) == figures["unavailable_slots"] + figures["exempt_slots"]
    for row in rows:
        assert row["service_month"] == "2026-10-01/2026-10-31"
        assert (row["clause"] == "announced-maintenance") == (row["verdict"] == "exempt")
        assert row["revision"] == "", "a report's statement has no live revisions"
        rate = row["success_rate"]
        assert rate == "" or "e" not in rate.lower() and len(rate.partition(".")[2]) <= 6, rate
    [footer] = [line for line in text.splitlines() if line.startswith("#")]
    assert footer == f"{DIGEST_PREFIX}1400000001 2026-10-01/2026-10-31 sha256 {statement.digest}"
    assert figures["digest"] == statement.digest
    assert recomputed_digest(text, "1400000001", "2026-10-01/2026-10-31") == statement.digest


def test_the_shell_recipe_gives_the_digest(tmp_path):
    """``grep | cut -d, -f1-6 | sha256sum``, as docs/statements.md gives it, on a CSV with two apps and months."""
    ten = day_start_ms(date(2026, 10, 14), TZ) + 120 * SLOT_MS
    counts = {ten + i * SLOT_MS: SlotCounts(1000, 1000 - 20 * i) for i in range(12)}
    counts[ten + 40 * SLOT_MS] = SlotCounts(3, 5)
    first_half = ServiceMonth(date(2026, 10, 1), date(2026, 10, 16))
    statements = (statement_of(counts), statement_of(counts, first_half, "app,2"), statement_of({}, OCTOBER, "x"))
    path = tmp_path / "statement.csv"
    path.write_text(csv_text(*statements), encoding="utf-8", newline="")
    done = subprocess.run(
        f"grep '^1400000001,2026-10-01/2026-10-31,' {path} | cut -d, -f1-6 | sha256sum",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split()[0] == statements[0].digest
    assert recomputed_digest(path.read_text(encoding="utf-8"), "app,2", "2026-10-01/2026-10-16") == statements[1].digest
    assert statements[2].digest == hashlib.sha256(b"").hexdigest(), "a month without traffic lists nothing"
    assert len({s.digest for s in statements}) == 3


def test_the_digest_changes_with_any_count_or_verdict_and_only_with_them():
    ten = day_start_ms(date(2026, 10, 20), TZ)
    base = {ten: SlotCounts(1000, 995), ten + SLOT_MS: SlotCounts(1000, 980)}
    digest = statement_of(base).digest
    assert statement_of({**base, ten: SlotCounts(1000, 994)}).digest != digest
    assert statement_of({**base, ten + 2 * SLOT_MS: SlotCounts(1, 1)}).digest != digest
    exempted = build_statement(
        "1400000001",
        OCTOBER,
        base,
        (Exemption(ten, ten + 2 * SLOT_MS, None, "force-majeure"),),
        WorkingDayCalendar(),
        None,
        POLICY,
        "report",
        **covered_until(OCTOBER, POLICY.timezone),
    )
    assert exempted.digest != digest, "an exemption changes a verdict, so the digest"
    assert statement_of(base, app_id="1400000002").digest != digest, "the listing names the app"
    other_source = build_statement(
        "1400000001",
        OCTOBER,
        base,
        (MAINTENANCE,),
        WorkingDayCalendar(),
        None,
        POLICY,
        "live",
        revisions={ten: 3},
        **covered_until(OCTOBER, POLICY.timezone),
    )
    assert other_source.digest == digest, "fees, source and revisions are not in the listing"


@given(st.integers(1, 10**9), st.integers(0, 10**9))
def test_rates_are_truncated_never_rounded_up(requests, successes):
    successes = min(successes, requests)
    rate = Fraction(successes, requests)
    text = rate_text(rate)
    written = Fraction(Decimal(text))
    assert written <= rate < written + Fraction(1, 10**6)
    assert (written < Fraction(99, 100)) == judge_slot(SlotCounts(requests, successes), POLICY).unavailable


def test_the_text_statement_prints_the_digest():
    statement = statement_of({START_MS: SlotCounts(10, 9)})
    text = to_text([statement], TZ, "title")
    assert f"digest sha256 {statement.digest} (1 slots with traffic" in text


@settings(max_examples=20, deadline=None)
@given(st.lists(month_counts, max_size=3))
def test_statements_written_one_at_a_time_give_the_bytes_of_the_whole_list(months):
    """MonthsOutput streams (a replay of 10,000 apps holds one app's slots at a time) yet writes what a list gave."""
    statements = [statement_of(counts, app_id=f"14000000{i:02d}") for i, counts in enumerate(months)]
    expected = {
        "json": json.dumps([statement_to_json(s) for s in statements], indent=2) + "\n",
        "csv": csv_text(*statements),
        "text": to_text(statements, TZ, "SLA month report 2026-10") + "\n",
    }
    for fmt, whole in expected.items():
        out = io.StringIO(newline="")
        output = MonthsOutput(fmt, out, TZ, "SLA month report 2026-10")  # type: ignore[arg-type]
        for statement in statements:
            output.add(statement)
        output.finish()
        assert out.getvalue() == whole, fmt
        assert output.count == len(statements)
