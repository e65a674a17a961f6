"""Builds deploy/grafana/sla-stream.json, sla-stream's Grafana dashboard, with grafana-foundation-sdk.

Run ``make dashboard`` (or ``python deploy/grafana/build_dashboard.py``) after
changing a panel; the test suite checks the committed JSON is what this file
builds, and evaluates every query against a real Prometheus.

Why a library rather than hand-written JSON: the SDK's builders are typed
and generated from Grafana's own schema, so a panel option that Grafana
does not know fails here, not in front of an operator.

The queries read the recording rules of deploy/prometheus/rules/sla.yml
(``app:...``), which count every app once however many workers export it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
)

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "sla-stream.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
APPS = 'app=~"$app"'


def query(expr: str, legend: str = "{{app}}", instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    built = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return built.instant().format("table") if instant else built.range()


def availability_lines() -> dashboard.ThresholdsConfig:
    """Red below 99% (50% voucher), orange below 99.5% (20%), yellow below 99.9% (10%), green at target."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps(
            [
                Threshold(None, "red"),
                Threshold(0.99, "orange"),
                Threshold(0.995, "yellow"),
                Threshold(0.999, "green"),
            ]
        )
    )


def month_panels() -> list:
    return [
        timeseries.Panel()
        .title("Month availability (lines at 99.9%, 99.5%, 99%)")
        .description("The running service month's availability, over the whole month's minutes.")
        .unit("percentunit")
        .decimals(3)
        .thresholds(availability_lines())
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE))
        .with_target(query(f"app:sla_month_availability:ratio{{{APPS}}}"))
        .grid_pos(GridPos(h=8, w=12, x=0, y=0)),
        stat.Panel()
        .title("Budget used of allowed")
        .description("Unavailable slots used of the month's budget (8 in a whole month at 99.9%).")
        .unit("percentunit")
        .with_target(query(f"app:sla_month_budget_used:slots{{{APPS}}} / app:sla_month_budget_allowed:slots{{{APPS}}}"))
        .grid_pos(GridPos(h=4, w=6, x=12, y=0)),
        stat.Panel()
        .title("Voucher if the month ended now")
        .unit("percentunit")
        .with_target(query(f"app:sla_month_voucher:ratio{{{APPS}}}"))
        .grid_pos(GridPos(h=4, w=6, x=18, y=0)),
        timeseries.Panel()
        .title("Budget burn-down against the ideal")
        .description("Slots left, and what would be left had the budget been spent evenly over the month.")
        .unit("none")
        .with_target(query(f"app:sla_month_budget_remaining:slots{{{APPS}}}", "{{app}} left"))
        .with_target(
            query(
                f"app:sla_month_budget_allowed:slots{{{APPS}}} * (1 - app:sla_month_elapsed:ratio{{{APPS}}})",
                "{{app}} ideal",
                ref="B",
            )
        )
        .grid_pos(GridPos(h=4, w=12, x=12, y=4)),
        timeseries.Panel()
        .title("Slot outcomes (first verdicts, per 5 minutes)")
        .unit("none")
        .with_target(
            query(
                f"max by (app, outcome) (increase(sla_slots_closed_total{{{APPS}}}[5m]))",
                "{{app}} {{outcome}}",
            )
        )
        .grid_pos(GridPos(h=8, w=12, x=0, y=8)),
        stat.Panel()
        .title("Open slot so far")
        .description("The newest open slot's success ratio; below 99% it will be unavailable unless it recovers.")
        .unit("percentunit")
        .decimals(2)
        .with_target(query(f"app:sla_open_slot_success:ratio{{{APPS}}}"))
        .grid_pos(GridPos(h=4, w=6, x=12, y=8)),
        stat.Panel()
        .title("Open slot requests")
        .unit("none")
        .with_target(query(f"app:sla_open_slot_requests:count{{{APPS}}}"))
        .grid_pos(GridPos(h=4, w=6, x=18, y=8)),
        timeseries.Panel()
        .title("Call failure ratio")
        .unit("percentunit")
        .with_target(query(f"app:sla_call_failures:ratio_rate1m{{{APPS}}}", "{{app}} 1m"))
        .with_target(query(f"app:sla_call_failures:ratio_rate5m{{{APPS}}}", "{{app}} 5m", ref="B"))
        .grid_pos(GridPos(h=4, w=6, x=12, y=12)),
        timeseries.Panel()
        .title("Calls per minute")
        .unit("none")
        .with_target(query(f"app:sla_calls:rate5m{{{APPS}}} * 60"))
        .grid_pos(GridPos(h=4, w=6, x=18, y=12)),
    ]


def fleet_panels() -> list:
    figures = [
        ("sort(app:sla_month_budget_remaining:slots)", "A"),
        ("app:sla_month_budget_used:slots", "B"),
        ("app:sla_month_budget_allowed:slots", "C"),
        ("app:sla_month_availability:ratio", "D"),
        ("app:sla_month_voucher:ratio", "E"),
    ]
    fleet = table.Panel().title("Apps by budget left").grid_pos(GridPos(h=8, w=12, x=0, y=17))
    for expr, ref in figures:
        fleet = fleet.with_target(query(expr, instant=True, ref=ref))
    fleet = fleet.with_transformation(DataTransformerConfig(id_val="merge", options={})).with_transformation(
        DataTransformerConfig(id_val="sortBy", options={"sort": [{"field": "Value #A", "desc": False}]})
    )
    alerts = (
        table.Panel()
        .title("Firing alerts")
        .with_target(query('ALERTS{alertstate="firing", alertname=~"Sla.*"}', instant=True))
        .grid_pos(GridPos(h=8, w=12, x=12, y=17))
    )
    return [fleet, alerts]


def pipeline_panels() -> list:
    def panel(title: str, expr: str, legend: str, unit: str, x: int, y: int) -> timeseries.Panel:
        return (
            timeseries.Panel()
            .title(title)
            .unit(unit)
            .with_target(query(expr, legend))
            .grid_pos(GridPos(h=6, w=8, x=x, y=y))
        )

    return [
        panel(
            "Events counted per second",
            "sum by (topic) (rate(sla_events_counted_total[5m]))",
            "{{topic}}",
            "none",
            0,
            26,
        ),
        panel(
            "Dead letters per hour",
            "sum by (topic, reason) (increase(sla_dead_letters_total[1h]))",
            "{{topic}} {{reason}}",
            "none",
            8,
            26,
        ),
        panel(
            "Watermark behind the clock",
            'max(sla_watermark_lag_seconds{job="sla-stream"})',
            "watermark lag",
            "s",
            16,
            26,
        ),
        panel("Consumer lag (records)", "sum by (topic) (sla_consumer_lag_records)", "{{topic}}", "none", 0, 32),
        panel("Workers by state", 'sum by (state) (sla_worker_state{job="sla-stream"})', "{{state}}", "none", 8, 32),
        panel(
            "Closer tick, 95th percentile",
            "histogram_quantile(0.95, sum by (le) (rate(sla_closer_tick_seconds_bucket[5m])))",
            "p95",
            "s",
            16,
            32,
        ),
        panel("Workers up", 'sum(up{job="sla-stream"})', "up", "none", 0, 38),
    ]


def build() -> dashboard.Dashboard:
    """The whole dashboard: the months, the fleet, the pipeline."""
    apps = (
        dashboard.QueryVariable("app")
        .label("App")
        .query("label_values(app:sla_month_availability:ratio, app)")
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    source = dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    board = (
        dashboard.Dashboard("sla-stream: availability, budget and pipeline")
        .uid("sla-stream")
        .tags(["sla-stream", "sla"])
        .timezone("Asia/Shanghai")
        .time("now-7d", "now")
        .refresh("1m")
        .with_variable(source)
        .with_variable(apps)
        .with_row(dashboard.Row("Running service month").grid_pos(GridPos(h=1, w=24, x=0, y=0)))
    )
    for built in month_panels():
        board = board.with_panel(built)
    board = board.with_row(dashboard.Row("Fleet").grid_pos(GridPos(h=1, w=24, x=0, y=16)))
    for built in fleet_panels():
        board = board.with_panel(built)
    board = board.with_row(dashboard.Row("Pipeline").grid_pos(GridPos(h=1, w=24, x=0, y=25)))
    for built in pipeline_panels():
        board = board.with_panel(built)
    return board


def render() -> str:
    """The dashboard's JSON as committed (sorted keys, two-space indent, final newline)."""
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(build().build())
    return json.dumps(json.loads(encoded), sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}", file=sys.stderr)
