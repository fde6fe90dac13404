"""Learning: versioned learned models replace per-category calibration curves; patterns keep a
smoothed acceptance; the fold records what it saw (an exact backlog behind a held-back horizon).

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "learned_models",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("fitted_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "fitted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learned_models")),
        sa.UniqueConstraint("version", name=op.f("uq_learned_models_version")),
    )
    op.create_index(
        "uq_learned_models_active",
        "learned_models",
        ["active"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.drop_table("calibration_curves")
    op.add_column(
        "pattern_metrics",
        sa.Column("acceptance_smoothed", sa.Double(), server_default="0", nullable=False),
    )
    # Thresholds were on raw confidence; they are on the model's probability now.
    op.execute("DELETE FROM confidence_thresholds")
    op.add_column(
        "fold_state", sa.Column("seen_through", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "fold_state",
        sa.Column(
            "in_progress",
            postgresql.ARRAY(sa.BigInteger()),
            server_default=sa.text("'{}'::bigint[]"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("fold_state", "in_progress")
    op.drop_column("fold_state", "seen_through")
    op.drop_column("pattern_metrics", "acceptance_smoothed")
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
    op.drop_index("uq_learned_models_active", table_name="learned_models")
    op.drop_table("learned_models")
    op.execute("DELETE FROM confidence_thresholds")
