"""The committed Prometheus rules are what the export writes from the alert catalogue, and use
only metric names the services export."""

from __future__ import annotations

import re
from pathlib import Path

from services.control import prometheus_export
from services.control.domain.alert_catalogue import DEFAULT_RULES, SIGNALS
from services.control.domain.prometheus_rules import prometheus_duration, prometheus_groups

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [*ROOT.glob("services/*/instruments.py"), ROOT / "shared/rpc/interceptors.py",
           ROOT / "shared/db/engine.py"]  # fmt: skip
SUFFIXES = ("_total", "_seconds_bucket", "_bucket")


def test_the_committed_files_are_the_export() -> None:
    assert prometheus_export.main(["--root", str(ROOT), "--check"]) == 0


def test_every_metric_in_the_promql_is_exported() -> None:
    declared = set()
    for source in SOURCES:
        declared |= set(re.findall(r'create_\w+\(\s*"(\w+)"', source.read_text()))
    for signal in SIGNALS:
        for name in re.findall(r"\b([a-z_]+)(?:\{|\[|\))", signal.promql):
            if name in {
                "max",
                "sum",
                "avg",
                "rate",
                "increase",
                "histogram_quantile",
                "by",
                "on",
                "le",
            }:
                continue
            base = name
            for suffix in SUFFIXES:
                base = base.removesuffix(suffix)
            assert base in declared, (signal.name, name)


def test_every_enabled_rule_is_exported_with_its_for() -> None:
    exported = {
        rule["alert"]: rule
        for group in prometheus_groups(DEFAULT_RULES)["groups"]
        for rule in group["rules"]
    }
    assert set(exported) == {r.name for r in DEFAULT_RULES}
    for rule in DEFAULT_RULES:
        assert exported[rule.name].get("for", "0s") == prometheus_duration(rule.for_duration)
        assert exported[rule.name]["labels"]["severity"] == rule.severity.label
