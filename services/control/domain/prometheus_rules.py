"""The alert rules as Prometheus alerting rules: the same conditions over the exported metrics.

Each rule's expression is its signal's PromQL (``alert_catalogue.SignalSpec.promql``) compared
with the rule's threshold; ``for``, ``keep_firing_for``, the severity, labels and annotations
carry over, so Prometheus + Alertmanager alert on exactly what the control service alerts on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from services.control.domain.alert_catalogue import SIGNALS_BY_NAME
from services.control.domain.alerts import AlertRule, Severity


def prometheus_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _template(text: str) -> str:
    return text.replace("{{ value }}", "{{ $value }}")


def prometheus_rule(rule: AlertRule) -> dict[str, Any]:
    signal = SIGNALS_BY_NAME[rule.signal]
    threshold = f"{rule.threshold:g}"
    entry: dict[str, Any] = {
        "alert": rule.name,
        "expr": f"({signal.promql}) {rule.comparison} {threshold}",
    }
    if rule.for_duration > timedelta(0):
        entry["for"] = prometheus_duration(rule.for_duration)
    if rule.keep_firing_for > timedelta(0):
        entry["keep_firing_for"] = prometheus_duration(rule.keep_firing_for)
    entry["labels"] = {
        "severity": rule.severity.label,
        **dict(sorted(rule.labels.items())),
        **({"safeguard": "rollout"} if rule.safeguard else {}),
    }
    annotations = {key: _template(value) for key, value in sorted(rule.annotations.items())}
    if rule.description:
        annotations["description"] = rule.description
    entry["annotations"] = annotations
    return entry


def prometheus_groups(rules: Sequence[AlertRule]) -> dict[str, Any]:
    """A Prometheus rule file's content: one group per severity, enabled rules only."""
    groups = []
    for severity in Severity:
        chosen = [r for r in rules if r.enabled and r.severity is severity]
        if chosen:
            groups.append(
                {
                    "name": f"reviewlearn.{severity.label}",
                    "rules": [prometheus_rule(r) for r in sorted(chosen, key=lambda r: r.name)],
                }
            )
    return {"groups": groups}
