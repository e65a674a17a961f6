"""The queries of deploy/grafana/sla-stream.json, as Prometheus would receive them from Grafana.

No Grafana server runs here, so the tests take every panel's query out of the
dashboard's JSON, put in what Grafana would for its variables, and evaluate
it on a real Prometheus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sla-stream.json"
VARIABLES = {"$app": ".*", "${datasource}": "prometheus", "$__rate_interval": "1m", "$__interval": "15s"}


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str
    """With the dashboard's variables replaced as Grafana would (``$app``: every app)."""


def panel_queries(path: Path = DASHBOARD, raw: bool = False) -> list[PanelQuery]:
    """Every target of every panel (rows' nested panels too); ``raw``: variables left as they are."""
    board = json.loads(path.read_text(encoding="utf-8"))
    panels = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])
    found = []
    for panel in panels:
        for target in panel.get("targets") or []:
            expr = target["expr"]
            if not raw:
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, f"{panel['title']}: a variable the test does not know in {expr}"
            found.append(PanelQuery(panel["title"], target["refId"], expr))
    return found
