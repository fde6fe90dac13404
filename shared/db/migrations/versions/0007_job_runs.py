"""Batch jobs: one job_runs row per (job, scheduled slot), with who ran it, per-repository
results and, for data-integrity checks, whether the check passed.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02 01:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job_runs", sa.Column("scheduled_for", sa.DateTime(timezone=True)))
    # Rows written before this revision (none, in practice: RunJobs answered UNIMPLEMENTED)
    # each become the run of the slot they started in.
    op.execute("UPDATE job_runs SET scheduled_for = started_at")
    op.alter_column(
        "job_runs",
        "scheduled_for",
        nullable=False,
        server_default=sa.text("clock_timestamp()"),
    )
    op.create_unique_constraint(
        "uq_job_runs_job_name_scheduled_for", "job_runs", ["job_name", "scheduled_for"]
    )
    op.add_column("job_runs", sa.Column("holder", sa.Text(), server_default="", nullable=False))
    op.add_column("job_runs", sa.Column("reason", sa.Text(), server_default="", nullable=False))
    op.add_column(
        "job_runs",
        sa.Column("duration_seconds", sa.Double(), server_default=sa.text("0"), nullable=False),
    )
    for column in ("repositories_done", "repositories_failed"):
        op.add_column(
            "job_runs",
            sa.Column(
                column,
                postgresql.JSONB(astext_type=sa.Text()),
                server_default=sa.text("'[]'::jsonb"),
                nullable=False,
            ),
        )
    op.add_column("job_runs", sa.Column("check_passed", sa.Boolean(), nullable=True))
    op.create_index("ix_job_runs_status", "job_runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_status", table_name="job_runs")
    for column in (
        "check_passed",
        "repositories_failed",
        "repositories_done",
        "duration_seconds",
        "reason",
        "holder",
    ):
        op.drop_column("job_runs", column)
    op.drop_constraint("uq_job_runs_job_name_scheduled_for", "job_runs", type_="unique")
    op.drop_column("job_runs", "scheduled_for")
