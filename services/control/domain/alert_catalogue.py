"""The signals alert rules may evaluate, and the plan's rules (seeded by migrations 0009, 0010).

Every signal has two definitions that mean the same thing: the control service computes it from
what the system recorded (``storage/alert_signal_repository.py``: heartbeats and samples of every
replica, job runs, threshold history), and ``promql`` computes it from the metrics the services
export, for the Prometheus rules that ``reviewlearn alerts export-prometheus`` writes. Signals
with no exported metric of their own use ``alert_signal_value``, the control service's gauge of
the values its last evaluation computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.control.domain.alerts import AlertRule, Channel, Severity

RUNBOOK = "docs/PHASE_5_OPERATIONS.md"
# RPCs that are not traffic (health checks, reflection), and outcomes that are the caller's
# doing — the same split as shared.heartbeat.stats.CLIENT_CODES.
_NOT_TRAFFIC = r'rpc_method!~"/grpc\\..*"'
_CLIENT_CODES = (
    "OK|INVALID_ARGUMENT|NOT_FOUND|ALREADY_EXISTS|FAILED_PRECONDITION|UNAUTHENTICATED"
    "|PERMISSION_DENIED|UNIMPLEMENTED|CANCELLED"
)


@dataclass(frozen=True)
class SignalSpec:
    name: str
    description: str
    unit: str
    promql: str
    """A PromQL expression whose value is the signal, aggregated over every replica."""


def _gauge(name: str) -> str:
    return f'max(alert_signal_value{{signal="{name}"}})'


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec(
        "learning_job_failure_rate",
        "Failed / finished batch job runs (integrity checks excluded) over the last 24 hours",
        "ratio",
        _gauge("learning_job_failure_rate"),
    ),
    SignalSpec(
        "insights_generation_p95_seconds",
        "p95 latency of the insights service's RPCs over 5 minutes, all replicas",
        "seconds",
        "histogram_quantile(0.95, sum by (le) (rate(api_response_time_seconds_bucket"
        f'{{service="insights",{_NOT_TRAFFIC}}}[5m])))',
    ),
    SignalSpec(
        "feedback_backlog",
        "Feedback events recorded but not yet folded into learning (largest replica report)",
        "events",
        "max(feedback_ingestion_backlog)",
    ),
    SignalSpec(
        "data_integrity_failed",
        "1 when the latest finished data-integrity check failed, 0 when it passed",
        "boolean",
        _gauge("data_integrity_failed"),
    ),
    SignalSpec(
        "db_pool_utilisation",
        "Checked-out / capacity of the database pool, the fullest replica",
        "ratio",
        "max(connection_pool_utilization)",
    ),
    SignalSpec(
        "learning_update_p95_seconds",
        "p95 duration of the learning fold, as the learning replicas report it",
        "seconds",
        "histogram_quantile(0.95, sum by (le) "
        '(rate(learning_metrics_update_duration_seconds_bucket{kind="fold"}[15m])))',
    ),
    SignalSpec(
        "fold_horizon_held_seconds",
        "Seconds since the learning fold's watermark last caught up with everything committed "
        "(a transaction still running holds it back), the most held learning replica",
        "seconds",
        _gauge("fold_horizon_held_seconds"),
    ),
    SignalSpec(
        "confidence_threshold_age_hours",
        "Hours since the last confidence threshold change (threshold history)",
        "hours",
        _gauge("confidence_threshold_age_hours"),
    ),
    SignalSpec(
        "cache_hit_rate",
        "Insights cache hits / lookups, mean over insights replicas that had lookups",
        "ratio",
        "avg(insights_cache_hit_rate) and on() (sum(rate(insights_cache_lookups_total[15m])) > 0)",
    ),
    SignalSpec(
        "api_error_rate",
        "Server-side errors / RPCs of every service over 5 minutes",
        "ratio",
        f'sum(rate(api_request_rate_total{{{_NOT_TRAFFIC},grpc_code!~"{_CLIENT_CODES}"}}[5m]))'
        f" / sum(rate(api_request_rate_total{{{_NOT_TRAFFIC}}}[5m]))",
    ),
    SignalSpec(
        "api_latency_p95_seconds",
        "p95 latency of data-path unary RPCs over 5 minutes, the slowest service",
        "seconds",
        "max(histogram_quantile(0.95, sum by (service, le) (rate(api_response_time_seconds_bucket"
        r'{rpc_method!~"/grpc\\..*|.*/(StreamFeedback|TuneConfidenceThresholds|RunJobs)"}[5m]))))',
    ),
    SignalSpec(
        "memory_utilisation",
        "Resident memory / container limit, the fullest replica that has a limit",
        "ratio",
        _gauge("memory_utilisation"),
    ),
    SignalSpec(
        "daily_jobs_finished",
        "Daily job runs that finished in the last hour",
        "runs",
        _gauge("daily_jobs_finished"),
    ),
    SignalSpec(
        "weekly_jobs_finished",
        "Weekly job runs (the insights report among them) that finished in the last hour",
        "runs",
        _gauge("weekly_jobs_finished"),
    ),
    SignalSpec(
        "threshold_changes",
        "Confidence thresholds changed in the last hour",
        "changes",
        "sum(increase(confidence_threshold_changes_total[1h]))",
    ),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)
SIGNALS_BY_NAME = {s.name: s for s in SIGNALS}

_PAGE = (Channel.PAGERDUTY, Channel.SLACK, Channel.EMAIL, Channel.LOG)
_CHAT = (Channel.SLACK, Channel.LOG)


def _rule(
    name: str,
    signal: str,
    comparison: str,
    threshold: float,
    *,
    severity: Severity,
    for_minutes: float,
    summary: str,
    description: str,
    safeguard: bool = False,
    keep_firing_minutes: float = 5,
    repeat_hours: float = 4,
) -> AlertRule:
    channels = _PAGE if severity is Severity.CRITICAL else _CHAT
    if severity is Severity.INFO:
        channels = (Channel.LOG, Channel.SLACK)
    return AlertRule(
        name=name,
        signal=signal,
        comparison=comparison,
        threshold=threshold,
        for_duration=timedelta(minutes=for_minutes),
        keep_firing_for=timedelta(minutes=keep_firing_minutes),
        severity=severity,
        channels=channels,
        repeat_interval=timedelta(hours=repeat_hours),
        description=description,
        labels={"team": "reviewlearn"},
        annotations={
            "summary": summary,
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
        safeguard=safeguard,
    )


CRITICAL, WARNING, INFO = Severity.CRITICAL, Severity.WARNING, Severity.INFO

DEFAULT_RULES: tuple[AlertRule, ...] = (
    _rule(
        "ReviewlearnLearningJobFailureRate", "learning_job_failure_rate", ">", 0.05,
        severity=CRITICAL, for_minutes=0, safeguard=True,
        summary="reviewlearn: {{ value }} of batch job runs failed in the last 24 hours",
        description="Plan: learning job failure rate > 5%.",
    ),
    _rule(
        "ReviewlearnInsightsGenerationSlow", "insights_generation_p95_seconds", ">", 5.0,
        severity=CRITICAL, for_minutes=5, safeguard=True,
        summary="reviewlearn: insights p95 latency {{ value }} s",
        description="Plan: insights generation time > 5 s (p95).",
    ),
    _rule(
        "ReviewlearnFeedbackBacklogHigh", "feedback_backlog", ">", 1000,
        severity=CRITICAL, for_minutes=5, safeguard=True,
        summary="reviewlearn: {{ value }} feedback events wait to be folded",
        description="Plan: feedback ingestion backlog > 1000.",
    ),
    _rule(
        "ReviewlearnDataIntegrityCheckFailed", "data_integrity_failed", ">=", 1,
        severity=CRITICAL, for_minutes=0, safeguard=True, keep_firing_minutes=0,
        summary="reviewlearn: the latest data-integrity check failed",
        description="Plan: data integrity check failure.",
    ),
    _rule(
        "ReviewlearnConnectionPoolExhausted", "db_pool_utilisation", ">=", 1.0,
        severity=CRITICAL, for_minutes=5, safeguard=True,
        summary="reviewlearn: a database pool is exhausted ({{ value }} in use)",
        description="Plan: database connection pool exhausted.",
    ),
    _rule(
        "ReviewlearnLearningUpdateSlow", "learning_update_p95_seconds", ">", 2.0,
        severity=WARNING, for_minutes=15,
        summary="reviewlearn: p95 learning update {{ value }} s",
        description="Plan: learning update latency > 2 s (p95).",
    ),
    _rule(
        "ReviewlearnFoldHorizonHeld", "fold_horizon_held_seconds", ">", 300,
        severity=WARNING, for_minutes=0,
        summary="reviewlearn: a transaction has held the fold watermark back for {{ value }} s",
        description="A long-running transaction holds the learning fold's watermark back.",
    ),
    _rule(
        "ReviewlearnConfidenceThresholdsStale", "confidence_threshold_age_hours", ">", 24,
        severity=WARNING, for_minutes=0, repeat_hours=24,
        summary="reviewlearn: confidence thresholds last changed {{ value }} hours ago",
        description="Plan: confidence thresholds stale > 24 h.",
    ),
    _rule(
        "ReviewlearnCacheHitRateLow", "cache_hit_rate", "<", 0.5,
        severity=WARNING, for_minutes=15,
        summary="reviewlearn: insights cache hit rate {{ value }}",
        description="Plan: cache hit rate < 50%.",
    ),
    _rule(
        "ReviewlearnApiErrorRateHigh", "api_error_rate", ">", 0.01,
        severity=WARNING, for_minutes=5,
        summary="reviewlearn: {{ value }} of RPCs fail server-side",
        description="Plan: API error rate > 1%.",
    ),
    _rule(
        "ReviewlearnApiLatencyHigh", "api_latency_p95_seconds", ">", 0.2,
        severity=WARNING, for_minutes=10,
        summary="reviewlearn: p95 RPC latency {{ value }} s in the slowest service",
        description="Plan: < 200 ms p95 API latency (phase 1 criterion).",
    ),
    _rule(
        "ReviewlearnConnectionPoolHigh", "db_pool_utilisation", ">", 0.8,
        severity=WARNING, for_minutes=15,
        summary="reviewlearn: a database pool is {{ value }} in use",
        description="Early warning for ReviewlearnConnectionPoolExhausted.",
    ),
    _rule(
        "ReviewlearnMemoryHigh", "memory_utilisation", ">", 0.8,
        severity=WARNING, for_minutes=10,
        summary="reviewlearn: a replica uses {{ value }} of its memory limit",
        description="Plan: memory usage > 80%.",
    ),
    _rule(
        "ReviewlearnDailyJobSummary", "daily_jobs_finished", ">", 0,
        severity=INFO, for_minutes=0, keep_firing_minutes=0, repeat_hours=24,
        summary="reviewlearn: {{ value }} daily job runs finished",
        description="Plan: daily job summary (info).",
    ),
    _rule(
        "ReviewlearnWeeklyInsightsReport", "weekly_jobs_finished", ">", 0,
        severity=INFO, for_minutes=0, keep_firing_minutes=0, repeat_hours=24,
        summary="reviewlearn: {{ value }} weekly job runs finished (insights report)",
        description="Plan: weekly insights report (info).",
    ),
    _rule(
        "ReviewlearnConfidenceThresholdUpdate", "threshold_changes", ">", 0,
        severity=INFO, for_minutes=0, keep_firing_minutes=0, repeat_hours=24,
        summary="reviewlearn: {{ value }} confidence thresholds changed in the last hour",
        description="Plan: confidence threshold update (info).",
    ),
)  # fmt: skip
