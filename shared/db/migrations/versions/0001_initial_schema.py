"""Initial schema: every table of the four services.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 18:53:24.403583
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("signal", sa.String(length=200), nullable=False),
        sa.Column("comparison", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("for_seconds", sa.Integer(), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("channels", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("repeat_seconds", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "comparison IN ('<', '<=', '>', '>=')", name=op.f("ck_alert_rules_comparison_valid")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_rules")),
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("rule_names", postgresql.ARRAY(sa.String(length=200)), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_silences")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_action"), "audit_events", ["action"], unique=False)
    op.create_table(
        "cached_metrics",
        sa.Column("cache_key", sa.String(length=300), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "cached_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_cached_metrics")),
    )
    op.create_table(
        "cached_paths",
        sa.Column("cache_key", sa.String(length=300), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "cached_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_cached_paths")),
    )
    op.create_table(
        "cached_trends",
        sa.Column("cache_key", sa.String(length=300), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "cached_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_cached_trends")),
    )
    op.create_table(
        "calibration_curves",
        sa.Column("scope_type", sa.SmallInteger(), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("curve", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("ece", sa.Double(), nullable=False),
        sa.Column("raw_ece", sa.Double(), nullable=False),
        sa.Column(
            "fitted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "scope_type", "scope_id", "category", name=op.f("pk_calibration_curves")
        ),
    )
    op.create_table(
        "confidence_thresholds",
        sa.Column("scope_type", sa.SmallInteger(), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("target", sa.Double(), nullable=False),
        sa.Column("not_useful_upper", sa.Double(), nullable=False),
        sa.Column("sample_size", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "scope_type", "scope_id", "category", name=op.f("pk_confidence_thresholds")
        ),
    )
    op.create_table(
        "feature_gates",
        sa.Column("feature", sa.SmallInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("feature", name=op.f("pk_feature_gates")),
    )
    op.create_table(
        "finding_deletions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("finding_id", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("snapshot", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("deleted_feedback_count", sa.BigInteger(), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finding_deletions")),
    )
    op.create_index(
        op.f("ix_finding_deletions_finding_id"), "finding_deletions", ["finding_id"], unique=False
    )
    op.create_table(
        "finding_outcomes",
        sa.Column("finding_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("pull_request", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("pattern_key", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("win_decisive", sa.Boolean(), nullable=True),
        sa.Column("win_occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("win_feedback_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("finding_id", name=op.f("pk_finding_outcomes")),
    )
    op.create_index(
        "ix_finding_outcomes_category_outcome",
        "finding_outcomes",
        ["category", "outcome"],
        unique=False,
    )
    op.create_index(
        "ix_finding_outcomes_repository_pr",
        "finding_outcomes",
        ["repository_id", "pull_request"],
        unique=False,
    )
    op.create_table(
        "fold_state",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("findings_folded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_folded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_fold_state")),
    )
    op.create_table(
        "gate_overrides",
        sa.Column("feature", sa.SmallInteger(), nullable=False),
        sa.Column("repository_url", sa.String(length=2048), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("feature", "repository_url", name=op.f("pk_gate_overrides")),
    )
    op.create_table(
        "gate_state",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kill_switch_engaged", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_gate_state_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_state")),
    )
    op.create_table(
        "idempotent_responses",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("service", "request_id", name=op.f("pk_idempotent_responses")),
    )
    op.create_table(
        "insight_rollups",
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.Column("positive", sa.BigInteger(), nullable=False),
        sa.Column("negative", sa.BigInteger(), nullable=False),
        sa.Column("dismissed", sa.BigInteger(), nullable=False),
        sa.Column("critical_positive", sa.BigInteger(), nullable=False),
        sa.Column("reviews", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "repository_id", "category", "week_start", name=op.f("pk_insight_rollups")
        ),
    )
    op.create_index(
        "ix_insight_rollups_team_week", "insight_rollups", ["team_id", "week_start"], unique=False
    )
    op.create_table(
        "insights_trends",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("metric", sa.SmallInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), server_default="", nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insights_trends")),
    )
    op.create_index(
        "ix_insights_trends_team_id_period", "insights_trends", ["team_id", "period"], unique=False
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("frequency", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "summary",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    op.create_index(
        "ix_job_runs_job_name_started_at", "job_runs", ["job_name", "started_at"], unique=False
    )
    op.create_index(op.f("ix_job_runs_request_id"), "job_runs", ["request_id"], unique=False)
    op.create_table(
        "learning_metrics",
        sa.Column("scope_type", sa.SmallInteger(), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False),
        sa.Column("dimension", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("shown", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("positive", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("negative", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("dismissed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "scope_type", "scope_id", "dimension", "key", name=op.f("pk_learning_metrics")
        ),
    )
    op.create_index(
        "ix_learning_metrics_dimension_key", "learning_metrics", ["dimension", "key"], unique=False
    )
    op.create_table(
        "learning_paths",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learning_paths")),
    )
    op.create_index(
        "ix_learning_paths_team_id_rank", "learning_paths", ["team_id", "rank"], unique=False
    )
    op.create_table(
        "pattern_metrics",
        sa.Column("scope_type", sa.SmallInteger(), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False),
        sa.Column("pattern_key", sa.String(length=32), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("normalized_message", sa.Text(), nullable=False),
        sa.Column("pattern_type", sa.SmallInteger(), nullable=False),
        sa.Column("occurrences", sa.BigInteger(), nullable=False),
        sa.Column("positive", sa.BigInteger(), nullable=False),
        sa.Column("negative", sa.BigInteger(), nullable=False),
        sa.Column("dismissed", sa.BigInteger(), nullable=False),
        sa.Column("recent_occurrences", sa.BigInteger(), nullable=False),
        sa.Column("prior_occurrences", sa.BigInteger(), nullable=False),
        sa.Column("p_value", sa.Double(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "scope_type", "scope_id", "pattern_key", name=op.f("pk_pattern_metrics")
        ),
    )
    op.create_index(
        "ix_pattern_metrics_pattern_type", "pattern_metrics", ["pattern_type"], unique=False
    )
    op.create_table(
        "replica_heartbeats",
        sa.Column("replica_id", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("applied_gate_version", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "heartbeat_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("replica_id", name=op.f("pk_replica_heartbeats")),
    )
    op.create_table(
        "roi_reports",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roi_reports")),
    )
    op.create_index(op.f("ix_roi_reports_team_id"), "roi_reports", ["team_id"], unique=False)
    op.create_table(
        "rollout_exposures",
        sa.Column("repository_url", sa.String(length=2048), nullable=False),
        sa.Column("first_phase", sa.SmallInteger(), nullable=False),
        sa.Column(
            "first_exposed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("repository_url", name=op.f("pk_rollout_exposures")),
    )
    op.create_table(
        "rollout_phases",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("phase", sa.SmallInteger(), nullable=False),
        sa.Column("percentage", sa.SmallInteger(), nullable=False),
        sa.Column("salt", sa.String(length=100), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("forced", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "success_metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "issues_found",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "percentage BETWEEN 0 AND 100", name=op.f("ck_rollout_phases_percentage_range")
        ),
        sa.CheckConstraint("phase BETWEEN 0 AND 4", name=op.f("ck_rollout_phases_phase_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_phases")),
    )
    op.create_table(
        "team_metrics",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_metrics")),
    )
    op.create_index(
        "ix_team_metrics_team_id_created",
        "team_metrics",
        ["team_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "threshold_history",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tune_id", sa.String(length=200), nullable=False),
        sa.Column("scope_type", sa.SmallInteger(), nullable=False),
        sa.Column("scope_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("old_threshold", sa.Double(), nullable=True),
        sa.Column("new_threshold", sa.Double(), nullable=True),
        sa.Column("old_source", sa.String(length=200), nullable=False),
        sa.Column("new_source", sa.String(length=200), nullable=False),
        sa.Column("sample_size", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threshold_history")),
    )
    op.create_index(
        "ix_threshold_history_scope",
        "threshold_history",
        ["scope_type", "scope_id", "category"],
        unique=False,
    )
    op.create_index(
        op.f("ix_threshold_history_tune_id"), "threshold_history", ["tune_id"], unique=False
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("rule_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("active_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notifications", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_name"],
            ["alert_rules.name"],
            name=op.f("fk_alert_events_rule_name_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    )
    op.create_index(
        "ix_alert_events_rule_name_state", "alert_events", ["rule_name", "state"], unique=False
    )
    op.create_table(
        "repositories",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_repositories_team_id_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
        sa.UniqueConstraint("url", name=op.f("uq_repositories_url")),
    )
    op.create_index(op.f("ix_repositories_team_id"), "repositories", ["team_id"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("pull_request", sa.Integer(), nullable=False),
        sa.Column("head_commit", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("pull_request > 0", name=op.f("ck_reviews_pull_request_positive")),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_reviews_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("request_id", name=op.f("uq_reviews_request_id")),
    )
    op.create_index(op.f("ix_reviews_repository_id"), "reviews", ["repository_id"], unique=False)
    op.create_table(
        "findings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("review_id", sa.BigInteger(), nullable=False),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("pull_request", sa.Integer(), nullable=False),
        sa.Column("client_finding_id", sa.String(length=200), nullable=True),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("file_path", sa.String(length=1024), nullable=False),
        sa.Column("line_start", sa.Integer(), nullable=False),
        sa.Column("line_end", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("suggested_fix", sa.Text(), server_default="", nullable=False),
        sa.Column("code_context", sa.Text(), server_default="", nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("pattern_key", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "tx_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_findings_confidence_range")
        ),
        sa.CheckConstraint(
            "line_start >= 0 AND line_end >= line_start", name=op.f("ck_findings_line_range")
        ),
        sa.CheckConstraint("severity BETWEEN 1 AND 5", name=op.f("ck_findings_severity_range")),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_findings_repository_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["reviews.id"],
            name=op.f("fk_findings_review_id_reviews"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_findings_team_id_teams"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
        sa.UniqueConstraint(
            "repository_id",
            "client_finding_id",
            name=op.f("uq_findings_repository_id_client_finding_id"),
        ),
    )
    op.create_index(
        "ix_findings_category_severity_created",
        "findings",
        ["category", "severity", "created_at"],
        unique=False,
    )
    op.create_index("ix_findings_created_at", "findings", ["created_at"], unique=False)
    op.create_index(
        "ix_findings_repository_pr_fingerprint",
        "findings",
        ["repository_id", "pull_request", "fingerprint"],
        unique=False,
    )
    op.create_index("ix_findings_review_id", "findings", ["review_id"], unique=False)
    op.create_index("ix_findings_tx_id", "findings", ["tx_id"], unique=False)
    op.create_table(
        "suggestion_feedback",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("finding_id", sa.BigInteger(), nullable=False),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "tx_id",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
            nullable=False,
        ),
        sa.CheckConstraint("kind BETWEEN 1 AND 7", name=op.f("ck_suggestion_feedback_kind_range")),
        sa.ForeignKeyConstraint(
            ["finding_id"],
            ["findings.id"],
            name=op.f("fk_suggestion_feedback_finding_id_findings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestion_feedback")),
        sa.UniqueConstraint("event_id", name=op.f("uq_suggestion_feedback_event_id")),
    )
    op.create_index(
        "ix_suggestion_feedback_finding_id_kind",
        "suggestion_feedback",
        ["finding_id", "kind"],
        unique=False,
    )
    op.create_index(
        "ix_suggestion_feedback_recorded_at", "suggestion_feedback", ["recorded_at"], unique=False
    )
    op.create_index(
        "ix_suggestion_feedback_repository_id_id",
        "suggestion_feedback",
        ["repository_id", "id"],
        unique=False,
    )
    op.create_index("ix_suggestion_feedback_tx_id", "suggestion_feedback", ["tx_id"], unique=False)
    # The kill switch row and the fold's starting watermark exist from the start.
    op.execute("INSERT INTO gate_state (id, version, kill_switch_engaged) VALUES (1, 0, false)")
    op.execute("INSERT INTO fold_state (stream, watermark) VALUES ('feedback', 0)")


def downgrade() -> None:
    op.drop_index("ix_suggestion_feedback_tx_id", table_name="suggestion_feedback")
    op.drop_index("ix_suggestion_feedback_repository_id_id", table_name="suggestion_feedback")
    op.drop_index("ix_suggestion_feedback_recorded_at", table_name="suggestion_feedback")
    op.drop_index("ix_suggestion_feedback_finding_id_kind", table_name="suggestion_feedback")
    op.drop_table("suggestion_feedback")
    op.drop_index("ix_findings_tx_id", table_name="findings")
    op.drop_index("ix_findings_review_id", table_name="findings")
    op.drop_index("ix_findings_repository_pr_fingerprint", table_name="findings")
    op.drop_index("ix_findings_created_at", table_name="findings")
    op.drop_index("ix_findings_category_severity_created", table_name="findings")
    op.drop_table("findings")
    op.drop_index(op.f("ix_reviews_repository_id"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_index(op.f("ix_repositories_team_id"), table_name="repositories")
    op.drop_table("repositories")
    op.drop_index("ix_alert_events_rule_name_state", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index(op.f("ix_threshold_history_tune_id"), table_name="threshold_history")
    op.drop_index("ix_threshold_history_scope", table_name="threshold_history")
    op.drop_table("threshold_history")
    op.drop_table("teams")
    op.drop_index("ix_team_metrics_team_id_created", table_name="team_metrics")
    op.drop_table("team_metrics")
    op.drop_table("rollout_phases")
    op.drop_table("rollout_exposures")
    op.drop_index(op.f("ix_roi_reports_team_id"), table_name="roi_reports")
    op.drop_table("roi_reports")
    op.drop_table("replica_heartbeats")
    op.drop_index("ix_pattern_metrics_pattern_type", table_name="pattern_metrics")
    op.drop_table("pattern_metrics")
    op.drop_index("ix_learning_paths_team_id_rank", table_name="learning_paths")
    op.drop_table("learning_paths")
    op.drop_index("ix_learning_metrics_dimension_key", table_name="learning_metrics")
    op.drop_table("learning_metrics")
    op.drop_index(op.f("ix_job_runs_request_id"), table_name="job_runs")
    op.drop_index("ix_job_runs_job_name_started_at", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_index("ix_insights_trends_team_id_period", table_name="insights_trends")
    op.drop_table("insights_trends")
    op.drop_index("ix_insight_rollups_team_week", table_name="insight_rollups")
    op.drop_table("insight_rollups")
    op.drop_table("idempotent_responses")
    op.drop_table("gate_state")
    op.drop_table("gate_overrides")
    op.drop_table("fold_state")
    op.drop_index("ix_finding_outcomes_repository_pr", table_name="finding_outcomes")
    op.drop_index("ix_finding_outcomes_category_outcome", table_name="finding_outcomes")
    op.drop_table("finding_outcomes")
    op.drop_index(op.f("ix_finding_deletions_finding_id"), table_name="finding_deletions")
    op.drop_table("finding_deletions")
    op.drop_table("feature_gates")
    op.drop_table("confidence_thresholds")
    op.drop_table("calibration_curves")
    op.drop_table("cached_trends")
    op.drop_table("cached_paths")
    op.drop_table("cached_metrics")
    op.drop_index(op.f("ix_audit_events_action"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("alert_silences")
    op.drop_table("alert_rules")
