"""deploy/grafana/sla-stream.json is what deploy/grafana/build_dashboard.py builds, and reads as a dashboard should.

Its queries are evaluated against a real Prometheus in test_prometheus_alerts.py.
"""

from __future__ import annotations

import importlib.util
import json

from dashboard_queries import DASHBOARD, panel_queries


def load_builder():
    spec = importlib.util.spec_from_file_location("build_dashboard", DASHBOARD.parent / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_the_built_one() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == load_builder().render(), "run `make dashboard` and commit"


def test_the_dashboard_reads_in_the_agreements_time_zone_with_an_app_filter() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["timezone"] == "Asia/Shanghai"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["app"]["includeAll"] and variables["app"]["allValue"] == ".*"
    titles = [p["title"] for p in board["panels"]]
    assert len(titles) == len(set(titles)), "panel titles are unique"
    fleet = ("Apps by budget left", "Firing alerts")
    assert all("$app" in q.expr for q in panel_queries(raw=True) if "app:" in q.expr and q.panel not in fleet)
