"""Insights: rollups of the feedback log (findings per day × repository × category × severity ×
rule × outcome, time-to-first-action histograms, reviews, global totals), the insights fold's own
watermark and per-finding state, team versions for cache keys, unique keys that make
RefreshInsights idempotent, the trend archive, and binary payloads in the cache tables.

The old insight_rollups and cached_* tables were never written (the insights service answered
UNIMPLEMENTED until this revision), and both are derived data, so they are replaced, not migrated.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CACHE_TABLES = ("cached_metrics", "cached_paths", "cached_trends")


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "insight_fold_state",
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("deletions_seen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("findings_folded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_folded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_insight_fold_state")),
    )
    op.execute("INSERT INTO insight_fold_state (stream, watermark) VALUES ('rollups', 0)")
    op.create_table(
        "insight_finding_states",
        sa.Column("finding_id", sa.BigInteger(), nullable=False),
        sa.Column("review_id", sa.BigInteger(), nullable=False),
        sa.Column("review_day", sa.Date(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("win_decisive", sa.Boolean(), nullable=True),
        sa.Column("win_occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("win_feedback_id", sa.BigInteger(), nullable=True),
        sa.Column("first_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("finding_id", name=op.f("pk_insight_finding_states")),
        postgresql_with={"fillfactor": 80},
    )
    op.create_index("ix_insight_finding_states_review_id", "insight_finding_states", ["review_id"])
    op.create_index(
        "ix_insight_finding_states_team_day", "insight_finding_states", ["team_id", "day"]
    )

    op.drop_index("ix_insight_rollups_team_week", table_name="insight_rollups")
    op.drop_table("insight_rollups")
    op.create_table(
        "insight_rollups",
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "repository_id",
            "day",
            "category",
            "severity",
            "rule_id",
            "outcome",
            name=op.f("pk_insight_rollups"),
        ),
    )
    op.create_index(
        "ix_insight_rollups_team_day",
        "insight_rollups",
        ["team_id", "day"],
        postgresql_include=["category", "severity", "rule_id", "outcome", "findings"],
    )
    op.create_table(
        "insight_action_times",
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "repository_id", "day", "category", "bucket", name=op.f("pk_insight_action_times")
        ),
    )
    op.create_index("ix_insight_action_times_team_day", "insight_action_times", ["team_id", "day"])
    op.create_table(
        "insight_review_rollups",
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("reviews", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "day", name=op.f("pk_insight_review_rollups")),
    )
    op.create_index(
        "ix_insight_review_rollups_team_day", "insight_review_rollups", ["team_id", "day"]
    )
    op.create_table(
        "insight_global_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "category", "outcome", name=op.f("pk_insight_global_rollups")
        ),
    )
    op.create_table(
        "insight_team_versions",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_insight_team_versions")),
    )
    op.create_table(
        "insights_trends_archive",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("metric", sa.SmallInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "team_id", "period", "metric", "category", name=op.f("pk_insights_trends_archive")
        ),
    )
    op.create_unique_constraint(
        op.f("uq_insights_trends_team_id_period_metric_category"),
        "insights_trends",
        ["team_id", "period", "metric", "category"],
    )
    op.create_unique_constraint(
        op.f("uq_learning_paths_team_id_rank"), "learning_paths", ["team_id", "rank"]
    )
    op.create_unique_constraint(
        op.f("uq_roi_reports_team_id_period_start_period_end"),
        "roi_reports",
        ["team_id", "period_start", "period_end"],
    )
    op.create_unique_constraint(
        op.f("uq_team_metrics_team_id_period_start_period_end"),
        "team_metrics",
        ["team_id", "period_start", "period_end"],
    )
    for table in _CACHE_TABLES:
        op.drop_table(table)
        op.create_table(
            table,
            sa.Column("cache_key", sa.String(length=300), nullable=False),
            sa.Column("payload", sa.LargeBinary(), nullable=False),
            sa.Column(
                "cached_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
            ),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("cache_key", name=op.f(f"pk_{table}")),
        )


def downgrade() -> None:
    for table in _CACHE_TABLES:
        op.drop_table(table)
        op.create_table(
            table,
            sa.Column("cache_key", sa.String(length=300), nullable=False),
            sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column(
                "cached_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
            ),
            sa.PrimaryKeyConstraint("cache_key", name=op.f(f"pk_{table}")),
        )
    op.drop_constraint(
        op.f("uq_team_metrics_team_id_period_start_period_end"), "team_metrics", type_="unique"
    )
    op.drop_constraint(
        op.f("uq_roi_reports_team_id_period_start_period_end"), "roi_reports", type_="unique"
    )
    op.drop_constraint(op.f("uq_learning_paths_team_id_rank"), "learning_paths", type_="unique")
    op.drop_constraint(
        op.f("uq_insights_trends_team_id_period_metric_category"), "insights_trends", type_="unique"
    )
    op.drop_table("insights_trends_archive")
    op.drop_table("insight_team_versions")
    op.drop_table("insight_global_rollups")
    op.drop_index("ix_insight_review_rollups_team_day", table_name="insight_review_rollups")
    op.drop_table("insight_review_rollups")
    op.drop_index("ix_insight_action_times_team_day", table_name="insight_action_times")
    op.drop_table("insight_action_times")
    op.drop_index("ix_insight_rollups_team_day", table_name="insight_rollups")
    op.drop_table("insight_rollups")
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
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "repository_id", "category", "week_start", name=op.f("pk_insight_rollups")
        ),
    )
    op.create_index(
        "ix_insight_rollups_team_week", "insight_rollups", ["team_id", "week_start"], unique=False
    )
    op.drop_index("ix_insight_finding_states_team_day", table_name="insight_finding_states")
    op.drop_index("ix_insight_finding_states_review_id", table_name="insight_finding_states")
    op.drop_table("insight_finding_states")
    op.drop_table("insight_fold_state")
