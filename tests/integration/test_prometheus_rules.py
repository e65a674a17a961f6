"""The alerting and recording rules (deploy/prometheus/rules/) under Prometheus's own promtool.

``promtool check rules`` must accept them, ``promtool test rules`` must pass
on each file of deploy/prometheus/tests/ (``sla_weeks_test.yml`` holds the
tests that need weeks of history, at a coarser evaluation interval), and each
alert must be tested both firing and not firing (in any of the files), carry a
severity (``page`` or ``ticket``), a summary and a runbook entry that exists
in docs/runbook.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "sla.yml"
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*_test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run deploy/packages.sh (make up does)", pytrace=False)
    return found


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    run = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("tests", TESTS, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(tests: Path) -> None:
    run = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True, text=True, cwd=tests.parent)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for rule in alerts():
        assert cases.get(rule["alert"]) == {True, False}, f"{rule['alert']}: tested {cases.get(rule['alert'])}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry() -> None:
    anchors = {
        re.sub(r"[^a-z0-9]+", "", line.lstrip("#").strip().lower())
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("### ")
    }
    for rule in alerts():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/runbook.md#"), runbook
        assert runbook.split("#", 1)[1] in anchors, f"{rule['alert']}: no '### {runbook}' heading in docs/runbook.md"
