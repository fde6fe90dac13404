"""finding_outcomes: no index on outcome, fillfactor 80, so outcome changes are HOT updates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 20:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_finding_outcomes_category_outcome", table_name="finding_outcomes")
    op.execute("ALTER TABLE finding_outcomes SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE finding_outcomes RESET (fillfactor)")
    op.create_index(
        "ix_finding_outcomes_category_outcome", "finding_outcomes", ["category", "outcome"]
    )
