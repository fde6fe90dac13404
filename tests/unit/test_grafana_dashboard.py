"""The operator dashboard: the committed JSON is what deploy/grafana/generate.py generates, and
every metric its PromQL queries is one the services export (or Prometheus's own ALERTS)."""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType
from typing import Any

from tests.metric_names import ROOT, exported_series

PROMETHEUS_SERIES = {"ALERTS"}
"""Series Prometheus itself makes (from the PrometheusRule's alerts), not a service."""

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", ROOT / "deploy/grafana/generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names in by/without/matchers, durations or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b\d[\d.e+-]*(?:ms|[smhdwy])?\b", "", expr)  # numbers and durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _NOT_METRICS:
            continue
        names.add(match.group())
    return names


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [
        re.sub(r"^label_values\((\w+),.*\)$", r"\1", v["query"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    return exprs


def test_the_committed_dashboard_is_the_generated_one() -> None:
    generated = _generator().render()
    committed = (ROOT / "deploy/grafana/reviewlearn.json").read_text()
    assert committed == generated, "deploy/grafana/reviewlearn.json is stale: run `make grafana`"


def test_every_queried_metric_is_exported() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/reviewlearn.json").read_text())
    exported = exported_series() | PROMETHEUS_SERIES
    queried = set().union(*(metric_names(e) for e in _expressions(dashboard)))
    assert len(queried) >= 20
    assert queried - exported == set()


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/reviewlearn.json").read_text())
    queried = set().union(*(metric_names(e) for e in _expressions(dashboard)))
    for needed in (
        "api_request_rate_total",  # RPC rate per method
        "api_error_rate_total",  # errors
        "api_response_time_seconds_bucket",  # latency
        "feedback_ingestion_rate_total",  # ingestion rate
        "feedback_ingestion_backlog",  # backlog
        "learning_metrics_update_duration_seconds_bucket",  # fold durations
        "insights_rollup_fold_duration_seconds_bucket",
        "insights_generation_duration_seconds_bucket",  # job durations
        "learning_jobs_duration_seconds_bucket",
        "alerts_firing",
        "insights_cache_hit_rate",  # cache hit rate
        "gate_snapshot_version",  # gate propagation
        "ALERTS",  # alerts firing
    ):
        assert needed in queried, needed


def test_the_promql_parser_finds_metrics_and_skips_the_rest() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, service) (rate(api_response_time_seconds_bucket"
        '{service=~"learning|x"}[$__rate_interval]))) / on (service) up offset 5m'
    )
    assert metric_names(expr) == {"api_response_time_seconds_bucket", "up"}
