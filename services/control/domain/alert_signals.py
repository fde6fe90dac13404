"""The values of the alert signals, from what every replica and the batch jobs recorded.

Replica-level signals take the worst live replica (pool, memory) or the largest report (backlog:
every feedback replica measures the same database count); traffic signals add the samples of all
replicas over the window. ``None`` means nothing was recorded to compute it from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.control.domain.health import ServiceWindow
from services.control.domain.replicas import ReplicaView


@dataclass(frozen=True)
class JobFacts:
    """What ``job_runs`` says (None for the whole when the table cannot be read)."""

    finished: int
    failed: int
    integrity_latest_failed: bool | None
    daily_finished: int
    weekly_finished: int


@dataclass(frozen=True)
class ThresholdFacts:
    age_hours: float | None
    changes: int


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def signal_values(
    *,
    replicas: Sequence[ReplicaView],
    windows: Mapping[str, ServiceWindow],
    jobs: JobFacts,
    thresholds: ThresholdFacts,
) -> dict[str, float | None]:
    live = [r for r in replicas if r.live]
    by_service: dict[str, list[ReplicaView]] = {}
    for replica in live:
        by_service.setdefault(replica.service, []).append(replica)

    def reported(service: str, key: str) -> list[float | None]:
        return [_number(r.signals.get(key)) for r in by_service.get(service, [])]

    hit_rates = [v for v in reported("insights", "insights_cache_hit_rate") if v is not None]
    total_rpcs = sum(w.rpc_count for w in windows.values())
    total_errors = sum(w.error_count for w in windows.values())
    slowest = [w.latency_p95_ms for w in windows.values() if w.latency_p95_ms is not None]
    insights = windows.get("insights")
    insights_p95 = insights.latency_p95_ms if insights is not None else None

    values: dict[str, float | None] = {
        "feedback_backlog": _worst(reported("feedback", "feedback_queue_size")),
        "db_pool_utilisation": _worst(
            [r.pool_in_use / r.pool_capacity if r.pool_capacity else None for r in live]
        ),
        "memory_utilisation": _worst(
            [r.rss_bytes / r.memory_limit_bytes if r.memory_limit_bytes else None for r in live]
        ),
        "cache_hit_rate": sum(hit_rates) / len(hit_rates) if hit_rates else None,
        "learning_update_p95_seconds": _worst(reported("learning", "learning_update_p95_seconds")),
        "fold_horizon_held_seconds": _worst(reported("learning", "fold_horizon_held_seconds")),
        "api_error_rate": total_errors / total_rpcs if total_rpcs else None,
        "api_latency_p95_seconds": max(slowest) / 1000 if slowest else None,
        "insights_generation_p95_seconds": insights_p95 / 1000
        if insights_p95 is not None
        else None,
        "confidence_threshold_age_hours": thresholds.age_hours,
        "threshold_changes": float(thresholds.changes),
        "learning_job_failure_rate": jobs.failed / jobs.finished if jobs.finished else None,
        "data_integrity_failed": None
        if jobs.integrity_latest_failed is None
        else float(jobs.integrity_latest_failed),
        "daily_jobs_finished": float(jobs.daily_finished),
        "weekly_jobs_finished": float(jobs.weekly_finished),
    }
    return values
