"""System health as the control plane sees it: the plan's ``/health/learning`` document.

Built only from what replicas recorded (heartbeats with each service's own health signals,
samples of the last minutes) and the gate snapshot — so it is the same on every control replica
and says something about replicas this process never talks to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from shared.gates.model import Feature, GateSnapshot, evaluate


class Status(IntEnum):
    """Ordered: the worst component decides the whole."""

    HEALTHY = 1
    DEGRADED = 2
    UNHEALTHY = 3


@dataclass(frozen=True)
class ServiceWindow:
    """One service's RPCs over the recent window, all replicas added up."""

    rpc_count: int = 0
    error_count: int = 0
    latency_p95_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.error_count / self.rpc_count if self.rpc_count else None


@dataclass(frozen=True)
class HealthLimits:
    backlog: int = 1000
    """Feedback not yet folded above this is degraded (the plan's critical alert)."""
    learning_update_age: timedelta = timedelta(hours=1)
    error_rate: float = 0.01
    latency_p95_ms: float = 200.0


@dataclass(frozen=True)
class ReplicaSignals:
    """What the system-health judgement needs of a live replica."""

    replica_id: str
    service: str
    applied_version: int
    gates_stale: bool
    signals: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    name: str
    status: Status
    detail: str
    live_replicas: int


@dataclass(frozen=True)
class SystemHealth:
    status: Status
    components: tuple[Component, ...]
    feedback_backlog: int | None
    last_learning_update: datetime | None
    thresholds_stale: bool | None
    cache_hit_rate: float | None
    gate_version: int
    gates_converged: bool
    replicas_seen: int
    kill_switch_engaged: bool
    generated_at: datetime

    def as_document(self) -> dict[str, Any]:
        """The JSON of ``GET /health/learning`` (the plan's shape, plus details)."""
        return {
            "status": self.status.name.lower(),
            "components": {c.name: c.status.name.lower() for c in self.components},
            "details": {c.name: c.detail for c in self.components if c.detail},
            "metrics": {
                "feedback_queue_size": self.feedback_backlog,
                "last_learning_update": self.last_learning_update.isoformat()
                if self.last_learning_update
                else None,
                "confidence_threshold_stale": self.thresholds_stale,
                "cache_hit_rate": self.cache_hit_rate,
                "gate_version": self.gate_version,
                "gates_converged": self.gates_converged,
                "replicas_seen": self.replicas_seen,
                "kill_switch_engaged": self.kill_switch_engaged,
            },
            "generated_at": self.generated_at.isoformat(),
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _component(
    name: str,
    replicas: Sequence[ReplicaSignals],
    problems: list[tuple[Status, str]],
) -> Component:
    if not replicas:
        problems = [(Status.UNHEALTHY, "no live replica"), *problems]
    stale = [r.replica_id for r in replicas if r.gates_stale]
    if stale:
        problems.append((Status.DEGRADED, f"gates stale on {', '.join(stale)}"))
    if not problems:
        return Component(name, Status.HEALTHY, "", len(replicas))
    worst = max(status for status, _ in problems)
    return Component(name, worst, "; ".join(text for _, text in problems), len(replicas))


def _traffic(window: ServiceWindow | None, limits: HealthLimits) -> list[tuple[Status, str]]:
    if window is None:
        return []
    problems: list[tuple[Status, str]] = []
    rate = window.error_rate
    if rate is not None and rate > limits.error_rate:
        problems.append((Status.DEGRADED, f"server-side error rate {rate:.2%}"))
    p95 = window.latency_p95_ms
    if p95 is not None and p95 > limits.latency_p95_ms:
        problems.append((Status.DEGRADED, f"p95 latency {p95:.0f} ms"))
    return problems


def _gate(snapshot: GateSnapshot | None, feature: Feature) -> list[tuple[Status, str]]:
    if snapshot is None:
        return [(Status.DEGRADED, "gate snapshot not loaded")]
    # The global switch, as a repository that has no override of its own sees it.
    decision = evaluate(snapshot, feature, "", hard_kill=False)
    if decision.enabled:
        return []
    return [(Status.DEGRADED, f"{feature} off: {decision.reason}")]


def assess(
    *,
    replicas: Sequence[ReplicaSignals],
    windows: Mapping[str, ServiceWindow],
    snapshot: GateSnapshot | None,
    gate_version: int,
    now: datetime,
    limits: HealthLimits,
) -> SystemHealth:
    by_service: dict[str, list[ReplicaSignals]] = {}
    for replica in replicas:
        by_service.setdefault(replica.service, []).append(replica)
    feedback = by_service.get("feedback", [])
    learning = by_service.get("learning", [])
    insights = by_service.get("insights", [])
    control = by_service.get("control", [])

    backlogs = [
        b for r in feedback if (b := _number(r.signals.get("feedback_queue_size"))) is not None
    ]
    backlog = int(max(backlogs)) if backlogs else None
    updates = [
        t for r in learning if (t := _time(r.signals.get("last_learning_update"))) is not None
    ]
    last_update = max(updates) if updates else None
    stale_flags = [
        bool(r.signals["confidence_threshold_stale"])
        for r in learning
        if isinstance(r.signals.get("confidence_threshold_stale"), bool)
    ]
    thresholds_stale = any(stale_flags) if stale_flags else None
    # The insights service reports "insights_cache_hit_rate" in its health metrics.
    hit_rates = [
        h for r in insights if (h := _number(r.signals.get("insights_cache_hit_rate"))) is not None
    ]
    hit_rate = sum(hit_rates) / len(hit_rates) if hit_rates else None

    feedback_problems = _traffic(windows.get("feedback"), limits)
    if backlog is not None and backlog > limits.backlog:
        feedback_problems.append((Status.DEGRADED, f"backlog {backlog} not yet folded"))
    learning_problems = _gate(snapshot, Feature.LEARNING)
    if last_update is not None and now - last_update > limits.learning_update_age:
        learning_problems.append(
            (Status.DEGRADED, f"last learning update {last_update.isoformat()}")
        )
    if thresholds_stale:
        learning_problems.append((Status.DEGRADED, "confidence thresholds are stale (tune)"))
    ranking_problems = _gate(snapshot, Feature.RANKING) + _traffic(windows.get("learning"), limits)
    insights_problems = _gate(snapshot, Feature.INSIGHTS) + _traffic(
        windows.get("insights"), limits
    )
    behind = [r.replica_id for r in replicas if r.applied_version < gate_version]
    control_problems: list[tuple[Status, str]] = []
    if behind:
        control_problems.append(
            (Status.DEGRADED, f"{len(behind)} replica(s) behind gate version {gate_version}")
        )

    components = (
        _component("feedback_collector", feedback, feedback_problems),
        _component("learning_engine", learning, learning_problems),
        _component("ranking_engine", learning, ranking_problems),
        _component("insights_engine", insights, insights_problems),
        _component("control_plane", control, control_problems),
    )
    return SystemHealth(
        status=max(c.status for c in components),
        components=components,
        feedback_backlog=backlog,
        last_learning_update=last_update,
        thresholds_stale=thresholds_stale,
        cache_hit_rate=hit_rate,
        gate_version=gate_version,
        gates_converged=not behind,
        replicas_seen=len(replicas),
        kill_switch_engaged=snapshot.kill_switch.engaged if snapshot is not None else False,
        generated_at=now,
    )
