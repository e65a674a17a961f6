"""What ``sla-stream exempt add`` accepts and writes, and ``report --exemptions``, without Kafka.

The windows, clauses and limits come from the agreement's list of grounds
(docs/sla.md §6) and the default settings (a 7-day maximum, 100 days kept);
the records written must be valid under docs/schemas/exemption.schema.json
and read back by the same codec the workers use.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from schemas import assert_valid

from stream.config import load_settings
from stream.events import RequestEvent, SuccessEvent
from stream.formats import exemption_from_json
from stream.monthend.exempt import ExemptError, exemption_record, parse_new_exemption
from stream.sla.exemptions import MAX_NOTE_CHARS
from stream.sla.slots import to_epoch_ms

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = to_epoch_ms(datetime(2026, 11, 27, 12, 0, tzinfo=SHANGHAI))
SETTINGS = load_settings()


def parse(start: str, end: str, clause: str = "announced-maintenance", app: str | None = "1400000001"):
    return parse_new_exemption(SETTINGS, app, start, end, clause, "db upgrade", NOW)


def test_a_time_without_offset_is_read_in_the_sla_zone_and_written_with_it():
    wanted = parse("2026-11-27T02:00", "2026-11-27T03:30:00+08:00")
    assert (wanted.start_ms, wanted.end_ms) == (
        to_epoch_ms(datetime(2026, 11, 27, 2, 0, tzinfo=SHANGHAI)),
        to_epoch_ms(datetime(2026, 11, 27, 3, 30, tzinfo=SHANGHAI)),
    )
    record = exemption_record(wanted, SHANGHAI)
    assert_valid("exemption", record)
    assert (record["start"], record["end"]) == ("2026-11-27T02:00:00+08:00", "2026-11-27T03:30:00+08:00")
    assert exemption_from_json(json.loads(json.dumps(record))).start_ms == wanted.start_ms  # as the workers read it


def test_utc_input_and_milliseconds_survive_the_round_trip():
    wanted = parse("2026-11-26T18:00:00.250Z", "2026-11-26T19:00:00Z", app=None)
    record = exemption_record(wanted, SHANGHAI)
    assert_valid("exemption", record)
    assert (record["start"], record["app_id"]) == ("2026-11-27T02:00:00.250+08:00", None)
    assert exemption_from_json(record).start_ms == wanted.start_ms


@pytest.mark.parametrize(
    ("start", "end", "clause", "expected"),
    [
        (
            "2026-11-27T03:00",
            "2026-11-27T02:00",
            "force-majeure",
            "--end 2026-11-27T02:00:00+08:00 is not after --start",
        ),
        ("2026-11-27T03:00", "2026-11-27T03:00", "force-majeure", "is not after --start"),
        ("2026-11-20T00:00", "2026-11-27T00:00:00.001", "force-majeure", "at most 7 days are allowed"),
        ("2026-08-19T00:00", "2026-08-19T01:00", "force-majeure", "before the topics' retention horizon"),
        ("2026-11-27T02:00", "2026-11-27T03:00", "bad-luck", "unknown clause 'bad-luck'; the agreement's grounds"),
        ("tomorrow", "2026-11-27T03:00", "force-majeure", "--start: 'tomorrow' is not an ISO 8601"),
    ],
)
def test_mistakes_are_refused_naming_what_is_wrong(start, end, clause, expected):
    with pytest.raises(ExemptError) as refused:
        parse(start, end, clause)
    assert expected in str(refused.value)


def test_a_note_longer_than_the_limit_is_refused_before_anything_is_written():
    with pytest.raises(ExemptError) as refused:
        parse_new_exemption(
            SETTINGS, "1400000001", "2026-11-27T02:00", "2026-11-27T03:00", "attack", "x" * 1_000_000, NOW
        )
    assert str(refused.value) == (
        f"--note: an exemption's note is 1,000,000 characters; at most {MAX_NOTE_CHARS} are allowed"
    )


def test_exactly_seven_days_is_allowed():
    wanted = parse("2026-11-20T00:00", "2026-11-27T00:00")
    assert wanted.end_ms - wanted.start_ms == 7 * 86_400_000


def test_report_reads_exported_exemptions(cli, tmp_path, write_events):
    """A malformed export is refused in one line naming the entry; a good one exempts like the settings file."""
    events = write_events([])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"id": "ex-1", "start": "2026-11-27T02:00:00", "end": "x", "clause": "attack"}]))
    line = cli("report", "--events", events, "--month", "2026-11", "--exemptions", broken).assert_one_line_error()
    assert "exemption 'ex-1'" in line and "'start' must be a time with seconds and a UTC offset" in line
    not_a_list = tmp_path / "object.json"
    not_a_list.write_text("{}")
    line = cli("report", "--events", events, "--month", "2026-11", "--exemptions", not_a_list).assert_one_line_error()
    assert "expected a JSON list of exemptions" in line


def test_report_applies_exported_exemptions_as_live(cli, tmp_path, write_events):
    """An exported exemption makes the slot it touches exempt, with its clause; a missing file is one line."""
    slot = to_epoch_ms(datetime(2026, 11, 10, 10, 0, tzinfo=SHANGHAI))
    requests = [RequestEvent(f"r-{i}", "1400000001", "room", "u", slot + i * 1000) for i in range(100)]
    successes = [
        SuccessEvent(f"s-{i}", r.event_id, r.app_id, "room", "u", r.ts + 200, r.ts) for i, r in enumerate(requests[:90])
    ]
    events = write_events([*requests, *successes])
    exported = tmp_path / "exemptions.json"
    window = {"start": "2026-11-10T10:04:00+08:00", "end": "2026-11-10T10:30:00+08:00", "clause": "attack"}
    exported.write_text(
        json.dumps([{"id": "ex-1", "app_id": "1400000001", **window, "note": "ddos", "slots_exempted": 1}])
    )
    plain = json.loads(cli("report", "--events", events, "--month", "2026-11", "--format", "json").out)
    exempted = json.loads(
        cli("report", "--events", events, "--month", "2026-11", "--format", "json", "--exemptions", exported).out
    )
    assert (plain[0]["unavailable_slots"], plain[0]["exempt_slots"]) == (1, 0)
    assert (exempted[0]["unavailable_slots"], exempted[0]["exempt_slots"]) == (0, 1)
    assert exempted[0]["exempt_periods"][0]["clause"] == "attack"
    missing = cli("report", "--events", events, "--month", "2026-11", "--exemptions", tmp_path / "nope.json")
    assert "exemptions file not found" in missing.assert_one_line_error()
