"""Control plane: audit request ids and filters, replica heartbeats with measurements,
replica samples (the time series rollout criteria and alerts read), sticky rollout phases.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "gate_state", sa.Column("kill_switch_changed_at", sa.DateTime(timezone=True), nullable=True)
    )

    op.add_column("audit_events", sa.Column("request_id", sa.String(length=200), nullable=True))
    op.add_column("audit_events", sa.Column("feature", sa.SmallInteger(), nullable=True))
    op.add_column(
        "audit_events",
        sa.Column("repository_url", sa.String(length=2048), server_default="", nullable=False),
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])

    op.add_column(
        "rollout_phases",
        sa.Column("sticky_exposure", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )

    heartbeat_columns: list[sa.Column[object]] = [
        sa.Column("host", sa.String(length=255), server_default="", nullable=False),
        sa.Column("pid", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gates_stale", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("gates_refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hard_kill", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rpc_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_p50_ms", sa.Double(), nullable=True),
        sa.Column("latency_p95_ms", sa.Double(), nullable=True),
        sa.Column("latency_p99_ms", sa.Double(), nullable=True),
        sa.Column("pool_in_use", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pool_capacity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rss_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("memory_limit_bytes", sa.BigInteger(), nullable=True),
        sa.Column(
            "signals",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    ]
    for column in heartbeat_columns:
        op.add_column("replica_heartbeats", column)
    op.create_index("ix_replica_heartbeats_service", "replica_heartbeats", ["service"])

    op.create_table(
        "replica_samples",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("replica_id", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("window_seconds", sa.Double(), nullable=False),
        sa.Column("rpc_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("latency_buckets", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("pool_in_use", sa.Integer(), nullable=False),
        sa.Column("pool_capacity", sa.Integer(), nullable=False),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_limit_bytes", sa.BigInteger(), nullable=True),
        sa.Column("applied_gate_version", sa.BigInteger(), nullable=False),
        sa.Column(
            "signals",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replica_samples")),
    )
    op.create_index("ix_replica_samples_recorded_at", "replica_samples", ["recorded_at"])
    op.create_index(
        "ix_replica_samples_service_recorded_at", "replica_samples", ["service", "recorded_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_replica_samples_service_recorded_at", table_name="replica_samples")
    op.drop_index("ix_replica_samples_recorded_at", table_name="replica_samples")
    op.drop_table("replica_samples")
    op.drop_index("ix_replica_heartbeats_service", table_name="replica_heartbeats")
    for name in (
        "signals",
        "memory_limit_bytes",
        "rss_bytes",
        "pool_capacity",
        "pool_in_use",
        "latency_p99_ms",
        "latency_p95_ms",
        "latency_p50_ms",
        "error_count",
        "rpc_count",
        "stopped_at",
        "hard_kill",
        "gates_refreshed_at",
        "gates_stale",
        "pid",
        "host",
    ):
        op.drop_column("replica_heartbeats", name)
    op.drop_column("rollout_phases", "sticky_exposure")
    op.drop_index("ix_audit_events_created_at", table_name="audit_events")
    for name in ("repository_url", "feature", "request_id"):
        op.drop_column("audit_events", name)
    op.drop_column("gate_state", "kill_switch_changed_at")
