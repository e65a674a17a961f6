"""``sla-stream exempt add`` then ``remove`` moves the live ledger, the verdict revisions and the next replay, and back.

Two apps each have one slot of recent traffic; one app's slot is unavailable
(90 of 100 calls succeed), closed by a running worker (revision 1). An
exemption added from the command line (a time without an offset, read in the
SLA's zone) makes that slot exempt in revision 2, in Redis, on the verdicts
topic, in the month ledger, in ``exempt list`` (one slot exempted), in a
replay of the month, in the worker's /metrics, and in ``report --exemptions``
over the same events.
Removing it makes revision 3 and puts every figure back. Mistaken
arguments are refused in one line each and write nothing to the topic.
"""

from __future__ import annotations

import json
import re
import urllib.request

from stream_harness import (
    Deployment,
    recent_slot,
    single_records,
    skip_near_a_month_boundary,
    slot_traffic,
    write_event_file,
)

from stream.sla.slots import local_date, local_time

pytest_plugins = ["stream_harness"]

APP, OTHER = "1400000001", "1400000002"


def refused(d: Deployment, *args: str) -> str:
    """Run a command that must be refused: exit status 2 and one line on stderr, no traceback; that line."""
    done = d.cli(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("sla-stream"), (args, done.stderr)
    assert done.stdout == "", done.stdout
    return lines[0]


def test_exempt_add_and_remove_move_every_figure(stream_deployment, tmp_path):
    d = stream_deployment(grace_seconds=5)
    tz = d.settings.policy.timezone
    skip_near_a_month_boundary(d.settings, began_within_min=30, ends_within_min=15)
    slot = recent_slot(20, d.settings)
    day = local_date(slot, tz)
    month, first_day = day.strftime("%Y-%m"), day.replace(day=1).isoformat()
    events = []
    for app, successes in ((APP, 90), (OTHER, 100)):
        requests, oks = slot_traffic(app, slot, 100, successes)
        events += requests + oks
    d.produce(single_records(events))
    worker = d.start_worker()
    d.wait_settled()

    def verdict() -> dict:
        stored = d.slots()[(APP, slot)].verdict
        assert stored is not None
        return stored

    def figures(months: list[dict]) -> dict[str, tuple[int, int]]:
        return {m["app_id"]: (m["unavailable_slots"], m["exempt_slots"]) for m in months}

    def ledger() -> dict[str, tuple[int, int]]:
        return figures([d.month(app, first_day) or {} for app in (APP, OTHER)])

    def replayed() -> dict[str, tuple[int, int]]:
        done = d.cli("replay", "--month", month, "--format", "json", "--app", APP, "--app", OTHER)
        assert done.returncode == 0, done.stderr
        return figures(json.loads(done.stdout))

    def metric(name: str) -> float | None:
        """The worker's /metrics sample ``name{app=APP}`` (the month's gauges refresh every few seconds)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = re.search(rf'^{name}{{app="{APP}"}} (\S+)$', text, re.M)
        return None if found is None else float(found[1])

    def wait_metrics(unavailable: float, exempt: float) -> None:
        d.wait_for(
            f"the month's metrics to show {unavailable:.0f} unavailable and {exempt:.0f} exempt",
            lambda: (metric("sla_month_unavailable_slots"), metric("sla_month_exempt_slots")) == (unavailable, exempt),
            30,
        )

    def wait_revision(revision: str) -> None:
        d.wait_for(f"revision {revision} of {APP}:{slot}", lambda: verdict()["revision"] == revision, 30)
        d.wait_settled()

    unexempted = {APP: (1, 0), OTHER: (0, 0)}
    assert ledger() == replayed() == unexempted
    assert verdict()["revision"] == "1"
    wait_metrics(1, 0)

    # Mistakes are refused in one line and write nothing.
    start = local_time(slot + 60_000, tz).replace(tzinfo=None).isoformat()  # no offset: the SLA's zone
    end = local_time(slot + 120_000, tz).replace(tzinfo=None).isoformat()
    window = ["--start", start, "--end", end]
    maintenance = ["--clause", "announced-maintenance"]
    add = ["exempt", "add", "--app", APP]

    def add_refused(start: str, end: str, *more: str) -> str:
        return refused(d, *add, "--start", start, "--end", end, *(more or maintenance))

    assert "is not after --start" in add_refused(end, start)
    assert "unknown clause 'bad-luck'" in add_refused(start, end, "--clause", "bad-luck")
    assert "at most 7 days" in add_refused(start, local_time(slot + 8 * 86_400_000, tz).isoformat())
    old = [local_time(slot - days * 86_400_000, tz).isoformat() for days in (101, 100)]
    assert "retention horizon" in add_refused(*old)
    assert "not an ISO 8601" in add_refused("yesterday", end)
    assert "unknown app 1499999999" in refused(d, "exempt", "add", "--app", "1499999999", *window, *maintenance)
    assert "one of the arguments --app --all-apps is required" in refused(d, "exempt", "add", *window, *maintenance)
    assert "no exemption 'ex-nope' is in force" in refused(d, "exempt", "remove", "ex-nope")
    assert d.read_topic("exemptions") == []

    # Added: revision 2 makes the slot exempt everywhere.
    added = d.cli(*add, *window, *maintenance, "--note", "media cluster upgrade")
    assert added.returncode == 0, added.stderr
    exemption_id = added.stdout.strip()
    assert re.fullmatch(rf"ex-{day:%Y%m%d}-[0-9a-f]{{6}}", exemption_id), added.stdout
    [record] = d.read_topic("exemptions")
    assert (record.key, record.value["start"], record.value["app_id"]) == (
        exemption_id,
        local_time(slot + 60_000, tz).isoformat(),
        APP,
    )
    wait_revision("2")
    assert (verdict()["exempt"], verdict()["clause"]) == ("1", "announced-maintenance")
    message = d.latest_verdicts()[f"{APP}:{slot}"]
    assert (message["revision"], message["exempt"]) == (2, True)
    exempted = {APP: (0, 1), OTHER: (0, 0)}
    assert ledger() == replayed() == exempted
    wait_metrics(0, 1)

    listed = d.cli("exempt", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["id"], entry["slots_exempted"], entry["note"]) == (exemption_id, 1, "media cluster upgrade")
    text = d.cli("exempt", "list").stdout
    assert re.search(rf"^{exemption_id} +{APP} .* +1  announced-maintenance: media cluster upgrade$", text, re.M), text

    # The offline report follows with the exported list, and equals the live ledger and live statement field for field.
    exported = tmp_path / "exemptions.json"
    exported.write_text(listed.stdout)
    events_file = write_event_file(tmp_path / "events.jsonl", events)
    report = d.cli("report", "--events", str(events_file), "--month", month, "--format", "json")
    with_exemptions = d.cli(
        "report", "--events", str(events_file), "--month", month, "--format", "json", "--exemptions", str(exported)
    )
    assert report.returncode == with_exemptions.returncode == 0, report.stderr + with_exemptions.stderr
    assert figures(json.loads(report.stdout)) == unexempted
    assert figures(json.loads(with_exemptions.stdout)) == exempted
    statement_only = {"digest", "running", "as_of", "coverage"}
    for months in json.loads(with_exemptions.stdout):
        assert {k: v for k, v in months.items() if k not in statement_only} == d.month(months["app_id"], first_day)
        page = f"http://127.0.0.1:{worker.metrics_port}/apps/{months['app_id']}/months/{month}.json"
        with urllib.request.urlopen(page, timeout=30) as response:
            [live] = json.loads(response.read())
        as_of = {"as_of", "coverage"}  # the report's clock and its file's events; the watermark and every record
        assert {k: v for k, v in live.items() if k not in as_of} == {k: v for k, v in months.items() if k not in as_of}
        assert live["running"] is months["running"], "the live statement, digest included, is the report's"

    # Removed: revision 3 puts every figure back.
    removed = d.cli("exempt", "remove", exemption_id)
    assert removed.returncode == 0, removed.stderr
    assert d.read_topic("exemptions")[-1].value is None  # a tombstone for the key
    wait_revision("3")
    assert (verdict()["exempt"], verdict()["clause"]) == ("0", "")
    assert d.latest_verdicts()[f"{APP}:{slot}"]["revision"] == 3
    assert ledger() == replayed() == unexempted
    wait_metrics(1, 0)
    assert d.cli("exempt", "list").stdout.strip() == "no exemptions in force"
    assert f"no exemption {exemption_id!r} is in force" in refused(d, "exempt", "remove", exemption_id)
