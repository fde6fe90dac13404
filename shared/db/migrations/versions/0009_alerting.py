"""Alerting: rule labels, annotations, keep_firing_for and safeguards; alert silences with
matchers; the notification outbox and its attempts; the plan's rules seeded.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EMPTY = sa.text("'{}'::jsonb")

# The plan's rules as of this revision (services/control/domain/alert_catalogue.py had the same
# values then; a unit test compares them). Frozen here: a later change of the catalogue is not a
# change of what this revision seeded. Columns: name, signal, comparison, threshold, for (s),
# keep_firing_for (s), severity (1 critical, 2 warning, 3 info), repeat (s), safeguard, summary.
_PAGE = ["pagerduty", "slack", "email", "log"]
_CHAT = ["slack", "log"]
_INFO = ["log", "slack"]
SEEDED_RULES: list[tuple[str, str, str, float, int, int, int, int, bool, str, str]] = [
    ("ReviewlearnLearningJobFailureRate", "learning_job_failure_rate", ">", 0.05, 0, 300, 1, 14400, True,
     "reviewlearn: {{ value }} of batch job runs failed in the last 24 hours",
     "Plan: learning job failure rate > 5%."),
    ("ReviewlearnInsightsGenerationSlow", "insights_generation_p95_seconds", ">", 5.0, 300, 300, 1, 14400, True,
     "reviewlearn: insights p95 latency {{ value }} s",
     "Plan: insights generation time > 5 s (p95)."),
    ("ReviewlearnFeedbackBacklogHigh", "feedback_backlog", ">", 1000, 300, 300, 1, 14400, True,
     "reviewlearn: {{ value }} feedback events wait to be folded",
     "Plan: feedback ingestion backlog > 1000."),
    ("ReviewlearnDataIntegrityCheckFailed", "data_integrity_failed", ">=", 1, 0, 0, 1, 14400, True,
     "reviewlearn: the latest data-integrity check failed",
     "Plan: data integrity check failure."),
    ("ReviewlearnConnectionPoolExhausted", "db_pool_utilisation", ">=", 1.0, 300, 300, 1, 14400, True,
     "reviewlearn: a database pool is exhausted ({{ value }} in use)",
     "Plan: database connection pool exhausted."),
    ("ReviewlearnLearningUpdateSlow", "learning_update_p95_seconds", ">", 2.0, 900, 300, 2, 14400, False,
     "reviewlearn: p95 learning update {{ value }} s",
     "Plan: learning update latency > 2 s (p95)."),
    ("ReviewlearnConfidenceThresholdsStale", "confidence_threshold_age_hours", ">", 24, 0, 300, 2, 86400, False,
     "reviewlearn: confidence thresholds last changed {{ value }} hours ago",
     "Plan: confidence thresholds stale > 24 h."),
    ("ReviewlearnCacheHitRateLow", "cache_hit_rate", "<", 0.5, 900, 300, 2, 14400, False,
     "reviewlearn: insights cache hit rate {{ value }}",
     "Plan: cache hit rate < 50%."),
    ("ReviewlearnApiErrorRateHigh", "api_error_rate", ">", 0.01, 300, 300, 2, 14400, False,
     "reviewlearn: {{ value }} of RPCs fail server-side",
     "Plan: API error rate > 1%."),
    ("ReviewlearnApiLatencyHigh", "api_latency_p95_seconds", ">", 0.2, 600, 300, 2, 14400, False,
     "reviewlearn: p95 RPC latency {{ value }} s in the slowest service",
     "Plan: < 200 ms p95 API latency (phase 1 criterion)."),
    ("ReviewlearnConnectionPoolHigh", "db_pool_utilisation", ">", 0.8, 900, 300, 2, 14400, False,
     "reviewlearn: a database pool is {{ value }} in use",
     "Early warning for ReviewlearnConnectionPoolExhausted."),
    ("ReviewlearnMemoryHigh", "memory_utilisation", ">", 0.8, 600, 300, 2, 14400, False,
     "reviewlearn: a replica uses {{ value }} of its memory limit",
     "Plan: memory usage > 80%."),
    ("ReviewlearnDailyJobSummary", "daily_jobs_finished", ">", 0, 0, 0, 3, 86400, False,
     "reviewlearn: {{ value }} daily job runs finished",
     "Plan: daily job summary (info)."),
    ("ReviewlearnWeeklyInsightsReport", "weekly_jobs_finished", ">", 0, 0, 0, 3, 86400, False,
     "reviewlearn: {{ value }} weekly job runs finished (insights report)",
     "Plan: weekly insights report (info)."),
    ("ReviewlearnConfidenceThresholdUpdate", "threshold_changes", ">", 0, 0, 0, 3, 86400, False,
     "reviewlearn: {{ value }} confidence thresholds changed in the last hour",
     "Plan: confidence threshold update (info)."),
]  # fmt: skip


def _channels(severity: int) -> list[str]:
    return {1: _PAGE, 2: _CHAT, 3: _INFO}[severity]


def upgrade() -> None:
    op.add_column(
        "alert_rules",
        sa.Column("keep_firing_seconds", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "alert_rules",
        sa.Column("labels", postgresql.JSONB(), server_default=_EMPTY, nullable=False),
    )
    op.add_column(
        "alert_rules",
        sa.Column("annotations", postgresql.JSONB(), server_default=_EMPTY, nullable=False),
    )
    op.add_column(
        "alert_rules",
        sa.Column("safeguard", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.alter_column("alert_events", "value", existing_type=sa.Double(), nullable=True)
    op.add_column(
        "alert_events", sa.Column("cleared_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "alert_events",
        sa.Column("silenced", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_index(
        "ux_alert_events_active_rule",
        "alert_events",
        ["rule_name"],
        unique=True,
        postgresql_where=sa.text("state IN (1, 2)"),
    )
    op.add_column(
        "alert_silences",
        sa.Column("matchers", postgresql.JSONB(), server_default=_EMPTY, nullable=False),
    )

    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert_events.id"],
            name=op.f("fk_alert_notifications_alert_id_alert_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notifications")),
    )
    op.create_index(
        op.f("ix_alert_notifications_alert_id"), "alert_notifications", ["alert_id"], unique=False
    )
    op.create_index(
        "ix_alert_notifications_pending",
        "alert_notifications",
        ["id"],
        postgresql_where=sa.text("status = 0"),
    )
    op.create_table(
        "alert_notification_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "attempted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["alert_notifications.id"],
            name=op.f("fk_alert_notification_attempts_notification_id_alert_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notification_attempts")),
    )
    op.create_index(
        op.f("ix_alert_notification_attempts_notification_id"),
        "alert_notification_attempts",
        ["notification_id"],
        unique=False,
    )

    seed = sa.text(
        "INSERT INTO alert_rules (name, signal, comparison, threshold, for_seconds, "
        "keep_firing_seconds, severity, channels, repeat_seconds, enabled, description, labels, "
        "annotations, safeguard) VALUES (:name, :signal, :comparison, :threshold, :for_seconds, "
        ":keep, :severity, :channels, :repeat, true, :description, CAST(:labels AS jsonb), "
        "CAST(:annotations AS jsonb), :safeguard) ON CONFLICT (name) DO NOTHING"
    )
    for (
        name,
        signal,
        cmp,
        threshold,
        for_s,
        keep,
        sev,
        repeat,
        guard,
        summary,
        desc,
    ) in SEEDED_RULES:
        op.execute(
            seed.bindparams(
                sa.bindparam("channels", type_=postgresql.ARRAY(sa.String())),
                name=name,
                signal=signal,
                comparison=cmp,
                threshold=threshold,
                for_seconds=for_s,
                keep=keep,
                severity=sev,
                channels=_channels(sev),
                repeat=repeat,
                description=desc,
                labels=json.dumps({"team": "reviewlearn"}),
                annotations=json.dumps(
                    {
                        "summary": summary,
                        "runbook_url": f"docs/PHASE_5_OPERATIONS.md#{name.lower()}",
                    }
                ),
                safeguard=guard,
            )
        )


def downgrade() -> None:
    names = [row[0] for row in SEEDED_RULES]
    op.execute(
        sa.text("DELETE FROM alert_rules WHERE name = ANY(:names)").bindparams(
            sa.bindparam("names", value=names, type_=postgresql.ARRAY(sa.String()))
        )
    )
    op.drop_index(
        op.f("ix_alert_notification_attempts_notification_id"),
        table_name="alert_notification_attempts",
    )
    op.drop_table("alert_notification_attempts")
    op.drop_index("ix_alert_notifications_pending", table_name="alert_notifications")
    op.drop_index(op.f("ix_alert_notifications_alert_id"), table_name="alert_notifications")
    op.drop_table("alert_notifications")
    op.drop_column("alert_silences", "matchers")
    op.drop_index("ux_alert_events_active_rule", table_name="alert_events")
    op.drop_column("alert_events", "silenced")
    op.drop_column("alert_events", "cleared_since")
    op.execute("DELETE FROM alert_events WHERE value IS NULL")
    op.alter_column("alert_events", "value", existing_type=sa.Double(), nullable=False)
    for name in ("safeguard", "annotations", "labels", "keep_firing_seconds"):
        op.drop_column("alert_rules", name)
