"""Generates the operator dashboard ``deploy/grafana/reviewlearn.json`` with grafanalib.

    python deploy/grafana/generate.py          # (make grafana) rewrite the JSON
    python deploy/grafana/generate.py --check  # exit 1 if the committed JSON is stale

The JSON is committed so it can be imported without Python (Grafana: Dashboards → Import, or a
provisioning ConfigMap); tests/unit/test_grafana_dashboard.py checks that it equals what this
file generates and that every metric it queries is one the services export. Panels query the
metric names the services' OpenTelemetry instruments export in Prometheus format
(docs/PHASE_5_OPERATIONS.md), plus Prometheus's own ``ALERTS`` series for the PrometheusRule.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

OUTPUT = Path(__file__).with_name("reviewlearn.json")
DATASOURCE = "${datasource}"
WINDOW = "$__rate_interval"
WIDTH = 24


def _target(expr: str, legend: str, ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


def _series(
    title: str,
    targets: list[Target],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=unit,
        legendDisplayMode="table",
        legendPlacement="right" if width == WIDTH else "bottom",
        legendCalcs=["lastNotNull", "max"],
        gridPos=GridPos(h=8, w=width, x=0, y=0),
    )


def _quantiles(metric: str, by: str, legend: str) -> list[Target]:
    return [
        _target(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{WINDOW}])))",
            f"p{int(q * 100)} {legend}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def _rows() -> list[tuple[str, list[Any]]]:
    rpc = 'service=~"$service"'
    return [
        (
            "RPCs (every service, per method)",
            [
                _series(
                    "Requests per second by method",
                    [
                        _target(
                            f"sum by (service, rpc_method) (rate(api_request_rate_total{{{rpc}}}"
                            f"[{WINDOW}]))",
                            "{{service}} {{rpc_method}}",
                        )
                    ],
                    unit="reqps",
                    width=WIDTH,
                ),
                _series(
                    "Errors per second by method and code",
                    [
                        _target(
                            f"sum by (service, rpc_method, grpc_code) "
                            f"(rate(api_error_rate_total{{{rpc}}}[{WINDOW}]))",
                            "{{rpc_method}} {{grpc_code}}",
                        )
                    ],
                    unit="reqps",
                ),
                _series(
                    "Error ratio by service (alert above 1%)",
                    [
                        _target(
                            f"sum by (service) (rate(api_error_rate_total{{{rpc}}}[{WINDOW}])) / "
                            f"sum by (service) (rate(api_request_rate_total{{{rpc}}}[{WINDOW}]))",
                            "{{service}}",
                        )
                    ],
                    unit="percentunit",
                ),
                _series(
                    "Latency p95 by method (target < 200 ms)",
                    [
                        _target(
                            "histogram_quantile(0.95, sum by (le, service, rpc_method) "
                            f"(rate(api_response_time_seconds_bucket{{{rpc}}}[{WINDOW}])))",
                            "{{service}} {{rpc_method}}",
                        )
                    ],
                    unit="s",
                    width=WIDTH,
                ),
            ],
        ),
        (
            "Ingestion and learning",
            [
                _series(
                    "Feedback events ingested per second",
                    [
                        _target(
                            f"sum by (result) (rate(feedback_ingestion_rate_total[{WINDOW}]))",
                            "{{result}}",
                        ),
                        _target(
                            f"sum(rate(learning_events_folded_total[{WINDOW}]))",
                            "folded by learning",
                            "B",
                        ),
                    ],
                    unit="ops",
                ),
                _series(
                    "Backlog: feedback not yet folded (alert above 1,000)",
                    [_target("max(feedback_ingestion_backlog)", "backlog")],
                ),
                _series(
                    "Ingestion duration",
                    _quantiles("feedback_ingestion_duration_seconds", "service", ""),
                    unit="s",
                ),
                Stat(
                    title="Collection success rate",
                    dataSource=DATASOURCE,
                    targets=[_target("min(feedback_collection_success_rate)", "success")],
                    format="percentunit",
                    gridPos=GridPos(h=8, w=12, x=0, y=0),
                ),
            ],
        ),
        (
            "Folds and jobs",
            [
                _series(
                    "Learning fold / recompute duration",
                    _quantiles("learning_metrics_update_duration_seconds", "kind", "{{kind}}"),
                    unit="s",
                ),
                _series(
                    "Insights rollup fold / rebuild duration",
                    _quantiles("insights_rollup_fold_duration_seconds", "kind", "{{kind}}"),
                    unit="s",
                ),
                _series(
                    "Batch job duration p95 by job (RunJobs)",
                    [
                        _target(
                            "histogram_quantile(0.95, sum by (le, job) "
                            f"(rate(learning_jobs_duration_seconds_bucket[{WINDOW}])))",
                            "{{job}}",
                        )
                    ],
                    unit="s",
                ),
                _series(
                    "Batch job success rate",
                    [
                        _target("min by (job) (learning_jobs_success_rate)", "{{job}}"),
                        _target("min(batch_job_success_rate)", "all jobs", "B"),
                        _target(
                            "min(data_integrity_check_pass_rate)", "data-integrity checks", "C"
                        ),
                    ],
                    unit="percentunit",
                ),
                _series(
                    "Insights generation (refresh job parts)",
                    [
                        _target(
                            "histogram_quantile(0.95, sum by (le) "
                            f"(rate({name}_bucket[{WINDOW}])))",
                            f"p95 {label}",
                            ref,
                        )
                        for name, label, ref in (
                            ("insights_generation_duration_seconds", "report", "A"),
                            ("trend_analysis_duration_seconds", "trends", "B"),
                            ("learning_path_generation_duration_seconds", "learning paths", "C"),
                            ("roi_calculation_duration_seconds", "ROI", "D"),
                        )
                    ],
                    unit="s",
                ),
                _series(
                    "Model fits and threshold changes",
                    [
                        _target(
                            f"sum(increase(learning_model_fits_total[{WINDOW}]))", "model fits"
                        ),
                        _target(
                            f"sum(increase(confidence_threshold_changes_total[{WINDOW}]))",
                            "threshold changes",
                            "B",
                        ),
                    ],
                ),
                _series(
                    "Ranking duration",
                    _quantiles("suggestion_ranking_duration_seconds", "service", ""),
                    unit="s",
                ),
                _series(
                    "Suggestions hidden (and the expected useful among them)",
                    [
                        _target(f"sum(rate(suggestions_hidden_total[{WINDOW}]))", "hidden"),
                        _target(
                            f"sum(rate(suggestions_hidden_expected_useful_total[{WINDOW}]))",
                            "expected useful among the hidden",
                            "B",
                        ),
                    ],
                    unit="ops",
                ),
            ],
        ),
        (
            "Caches, gates, alerts",
            [
                _series(
                    "Insights cache hit rate",
                    [
                        _target("avg(insights_cache_hit_rate)", "hit rate since start"),
                        _target(
                            f'sum(rate(insights_cache_lookups_total{{result!="miss"}}[{WINDOW}]))'
                            f" / sum(rate(insights_cache_lookups_total[{WINDOW}]))",
                            "hit rate now",
                            "B",
                        ),
                    ],
                    unit="percentunit",
                ),
                _series(
                    "Gate propagation: replicas behind the newest snapshot",
                    [
                        _target(
                            "max(gate_snapshot_version) - gate_snapshot_version",
                            "{{job}} {{instance}}",
                        ),
                        _target("sum(gate_snapshot_stale)", "stale replicas", "B"),
                    ],
                    description="0 everywhere once every replica applied the latest gates "
                    "(kill switch, feature gates, rollout); confirmations: GetGatePropagation",
                ),
                _series(
                    "Alerts firing",
                    [
                        _target(
                            "max by (severity) (alerts_firing)", "{{severity}} (control plane)"
                        ),
                        _target(
                            'count by (alertname, severity) (ALERTS{alertstate="firing",'
                            'alertname=~"Reviewlearn.*"})',
                            "{{severity}} {{alertname}} (Prometheus)",
                            "B",
                        ),
                    ],
                    description="The control plane's own alert rules (ListActiveAlerts) and "
                    "the PrometheusRule's alerts as Prometheus evaluates them",
                ),
                _series(
                    "Alert notifications",
                    [
                        _target(f"sum(increase(alert_notifications_sent_total[{WINDOW}]))", "sent"),
                        _target(
                            f"sum(increase(alert_notifications_failed_total[{WINDOW}]))",
                            "given up",
                            "B",
                        ),
                    ],
                ),
                _series(
                    "Database: pool use and query latency",
                    [
                        _target(
                            "max by (service) (connection_pool_utilization)", "pool {{service}}"
                        ),
                        _target(
                            "histogram_quantile(0.95, sum by (le, service) "
                            f"(rate(query_duration_seconds_bucket[{WINDOW}])))",
                            "p95 query {{service}}",
                            "B",
                        ),
                        _target(
                            f"sum by (service) (rate(transaction_rollback_rate_total[{WINDOW}]))",
                            "rollbacks/s {{service}}",
                            "C",
                        ),
                    ],
                ),
            ],
        ),
    ]


def _layout(rows: list[tuple[str, list[Any]]]) -> list[Any]:
    """Rows of panels, two to a line (a full-width panel takes a line)."""
    panels: list[Any] = []
    y = 0
    for title, row_panels in rows:
        panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=WIDTH, x=0, y=y)))
        y += 1
        x = 0
        for panel in row_panels:
            w = panel.gridPos.w
            if x + w > WIDTH:
                x, y = 0, y + 8
            panel.gridPos = GridPos(h=8, w=w, x=x, y=y)
            x += w
            if x >= WIDTH:
                x, y = 0, y + 8
        if x:
            y += 8
        panels.extend(row_panels)
    return panels


def dashboard() -> Dashboard:
    return Dashboard(
        title="reviewlearn",
        uid="reviewlearn-operator",
        description="RPCs, ingestion and backlog, folds and jobs, caches, gates and alerts "
        "of the four reviewlearn services (generated by deploy/grafana/generate.py)",
        tags=["reviewlearn"],
        timezone="utc",
        refresh="30s",
        time=Time("now-6h", "now"),
        templating=Templating(
            list=[
                Template(
                    name="datasource",
                    label="Prometheus",
                    query="prometheus",
                    type="datasource",
                ),
                Template(
                    name="service",
                    label="service",
                    dataSource=DATASOURCE,
                    query="label_values(api_request_rate_total, service)",
                    includeAll=True,
                    multi=True,
                    default="All",
                    allValue=".*",
                ),
            ]
        ),
        panels=_layout(_rows()),
    ).auto_panel_ids()


def render() -> str:
    data = dashboard().to_json_data()
    return json.dumps(data, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `make grafana`")
            sys.exit(1)
        print(f"{OUTPUT} is fresh")
        return
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
