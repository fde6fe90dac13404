"""The phased rollout: phases, moves between them, and the success criteria that gate a move.

Phases 1–4 expose 10 / 25 / 50 / 100% of repositories (``shared.gates.model``); phase 0 is the
shadow phase before any exposure. Advancing leaves the current phase, so it is judged on the
current phase's criteria (the plan's section 5.2), each measured from what the system recorded
during the phase (heartbeat samples of every replica, job runs) — never one process's memory.

A blocking criterion that fails, or that has nothing recorded to be measured on, refuses the
advance; ``force`` (with its reason, audited as forced) overrides. Informational criteria (user
satisfaction, load tests) are listed so the operator sees them, and never block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.errors import FailedPrecondition, Violations
from shared.gates.model import LAST_PHASE, PHASE_PERCENTAGES, Rollout


@dataclass(frozen=True)
class PhaseRecord:
    """One row of the rollout history."""

    phase: int
    percentage: int
    salt: str
    started_at: datetime
    started_by: str
    reason: str
    forced: bool = False
    sticky_exposure: bool = False
    issues_found: tuple[str, ...] = ()
    success_metrics: Mapping[str, Any] = field(default_factory=dict)
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Measurements:
    """What the system recorded over a window; None where nothing was recorded."""

    rpc_count: int = 0
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    latency_samples: int = 0
    job_runs: int = 0
    learning_update_success: float | None = None
    integrity_runs: int = 0
    integrity_failures: int | None = None
    pool_utilisation: float | None = None
    memory_utilisation: float | None = None
    offline_evaluation_auc: float | None = None
    """The serving model's out-of-time validation: AUC on the findings first seen after the
    data it was fitted on (``learned_models.document.validation``)."""
    offline_evaluation_model: str = ""
    offline_evaluation_samples: int = 0

    @property
    def resource_use(self) -> float | None:
        values = [v for v in (self.pool_utilisation, self.memory_utilisation) if v is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class CriterionSpec:
    name: str
    comparison: str
    threshold: float
    blocking: bool
    description: str


@dataclass(frozen=True)
class Criterion:
    name: str
    comparison: str
    threshold: float
    observed: float
    met: bool
    detail: str
    blocking: bool
    measured: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "observed": self.observed if math.isfinite(self.observed) else None,
            "met": self.met,
            "detail": self.detail,
            "blocking": self.blocking,
            "measured": self.measured,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Criterion:
        return cls(
            name=str(data["name"]),
            comparison=str(data["comparison"]),
            threshold=float(data["threshold"]),
            observed=float(data["observed"]) if data.get("observed") is not None else 0.0,
            met=bool(data["met"]),
            detail=str(data.get("detail", "")),
            blocking=bool(data.get("blocking", True)),
            measured=bool(data.get("measured", True)),
        )


def _spec(name: str, comparison: str, threshold: float, description: str) -> CriterionSpec:
    return CriterionSpec(name, comparison, threshold, True, description)


def _info(name: str, description: str) -> CriterionSpec:
    return CriterionSpec(name, ">=", 0.0, False, description)


_ERROR_RATE_STRICT = _spec(
    "error_rate", "<", 0.001, "server-side errors / RPCs of every replica in the phase"
)
_LATENCY = _spec("latency_p95_ms", "<", 200.0, "p95 of data-path unary RPCs, all replicas")
_UPDATES = _spec(
    "learning_update_success", ">", 0.99, "succeeded / finished learning job runs in the phase"
)
_INTEGRITY = _spec("data_integrity_failures", "<=", 0.0, "failed integrity checks in the phase")
_OFFLINE = CriterionSpec(
    "offline_evaluation_auc",
    ">",
    0.5,
    False,
    "the active learned model's out-of-time validation (AUC), where it has one",
)

PHASE_CRITERIA: Mapping[int, tuple[CriterionSpec, ...]] = {
    # Shadow: the plan's exit criteria before any developer sees learned ranking.
    0: (_ERROR_RATE_STRICT, _LATENCY, _UPDATES, _INTEGRITY, _OFFLINE),
    1: (
        _ERROR_RATE_STRICT,
        _LATENCY,
        _UPDATES,
        _INTEGRITY,
        _OFFLINE,
        _info("user_satisfaction", "collect feedback from the beta teams (outside reviewlearn)"),
    ),
    2: (
        _spec("error_rate", "<", 0.005, "server-side errors / RPCs of every replica in the phase"),
        _LATENCY,
        _UPDATES,
        _INTEGRITY,
        _spec("resource_use", "<", 0.8, "max of pool use and RSS / memory limit over replicas"),
        _OFFLINE,
        _info("insights_accuracy", "insights accuracy > 90% (not recorded by the system)"),
        _info("load_2_5x", "performance stable under 2.5x load (run the load test before)"),
    ),
}
# Phase 3 keeps every phase 2 criterion ("maintained"); phase 4 is judged the same for stability.
PHASE_CRITERIA = {
    **PHASE_CRITERIA,
    3: (
        *PHASE_CRITERIA[2],
        _info("scaling", "scaling behaviour confirmed (replicas, pool, database connections)"),
    ),
    4: (*PHASE_CRITERIA[2], _info("team_ready", "on-call trained, kill switch drill done")),
}


def _observed(spec: CriterionSpec, m: Measurements) -> tuple[float | None, str]:
    match spec.name:
        case "error_rate":
            if m.error_rate is None:
                return None, "no RPCs recorded in the window"
            return m.error_rate, f"{m.rpc_count} RPCs"
        case "latency_p95_ms":
            if m.latency_p95_ms is None:
                return None, "no data-path RPCs recorded in the window"
            return m.latency_p95_ms, f"{m.latency_samples} RPCs"
        case "learning_update_success":
            if m.learning_update_success is None:
                return None, "no learning job runs recorded in the window"
            return m.learning_update_success, f"{m.job_runs} job runs"
        case "data_integrity_failures":
            if m.integrity_failures is None:
                return None, "no data-integrity check recorded in the window"
            return float(m.integrity_failures), f"{m.integrity_runs} checks"
        case "resource_use":
            if m.resource_use is None:
                return None, "no replica samples in the window"
            return m.resource_use, (
                f"pool {_fraction(m.pool_utilisation)}, memory {_fraction(m.memory_utilisation)}"
            )
        case "offline_evaluation_auc":
            if m.offline_evaluation_auc is None:
                return None, "no active learned model with an out-of-time validation"
            return m.offline_evaluation_auc, (
                f"model {m.offline_evaluation_model} on {m.offline_evaluation_samples} findings "
                "first seen after its fitting data"
            )
    return None, spec.description


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _holds(observed: float, comparison: str, threshold: float) -> bool:
    return {
        "<": observed < threshold,
        "<=": observed <= threshold,
        ">": observed > threshold,
        ">=": observed >= threshold,
    }[comparison]


def judge(phase: int, measurements: Measurements) -> list[Criterion]:
    """The phase's criteria with measured value, target and pass/fail."""
    criteria = []
    for spec in PHASE_CRITERIA[phase]:
        observed, detail = _observed(spec, measurements)
        measured = observed is not None
        met = measured and _holds(observed or 0.0, spec.comparison, spec.threshold)
        if not spec.blocking and not measured:
            detail = f"informational: {detail}"
        elif not measured:
            detail = f"not measurable: {detail}; blocking until it is recorded (or force)"
        criteria.append(
            Criterion(
                name=spec.name,
                comparison=spec.comparison,
                threshold=spec.threshold,
                observed=observed if observed is not None else 0.0,
                met=bool(met),
                detail=detail,
                blocking=spec.blocking,
                measured=measured,
            )
        )
    return criteria


def failing(criteria: Sequence[Criterion]) -> list[Criterion]:
    return [c for c in criteria if c.blocking and not c.met]


def refuse_advance(phase: int, criteria: Sequence[Criterion]) -> FailedPrecondition:
    bad = failing(criteria)
    listed = "; ".join(
        f"{c.name} {c.observed:g} (needs {c.comparison} {c.threshold:g}: {c.detail})"
        if c.measured
        else f"{c.name}: {c.detail}"
        for c in bad
    )
    return FailedPrecondition(
        f"phase {phase} criteria not met: {listed}. Fix them, or advance with force and a reason",
        reason="ROLLOUT_CRITERIA_NOT_MET",
        metadata={"failing": ",".join(c.name for c in bad), "phase": str(phase)},
    )


# ------------------------------------------------------------------ moves


def next_phase(current: Rollout) -> int:
    if not current.in_force:
        return 1
    if current.phase >= LAST_PHASE:
        raise FailedPrecondition(
            f"the rollout is complete (phase {LAST_PHASE}, 100%); there is no next phase",
            reason="ROLLOUT_COMPLETE",
        )
    return current.phase + 1


def check_phase(violations: Violations, phase: int, field_name: str) -> None:
    if not 0 <= phase <= LAST_PHASE:
        violations.add(field_name, f"must be a phase from 0 to {LAST_PHASE}, got {phase}")


def check_percentage(violations: Violations, percentage: int, field_name: str) -> None:
    if not 0 <= percentage <= 100:
        violations.add(field_name, f"must be a percentage from 0 to 100, got {percentage}")


def check_rollback(current: Rollout, to_phase: int) -> None:
    if not current.in_force:
        raise FailedPrecondition(
            "no rollout is in force; nothing to roll back", reason="ROLLOUT_NOT_STARTED"
        )
    if to_phase >= current.phase:
        raise FailedPrecondition(
            f"to_phase must be below the current phase {current.phase}, got {to_phase}",
            reason="ROLLBACK_NOT_BACKWARDS",
            metadata={"current_phase": str(current.phase)},
        )


def what_if(current: Rollout, *, phase: int | None, percentage: int | None) -> Rollout:
    """The rollout as it would be at another phase or percentage (the same salt)."""
    if phase is not None:
        return replace(current, in_force=True, phase=phase, percentage=PHASE_PERCENTAGES[phase])
    if percentage is not None:
        return replace(current, in_force=True, percentage=percentage)
    return current
