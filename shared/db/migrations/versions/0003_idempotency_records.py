"""idempotency_records: request ids scoped by caller, with a digest of the request (AIP-155).

reviews.request_id is no longer unique: two callers may use the same id, and replays are decided
by idempotency_records. Feedback's rows in idempotent_responses are left as they were (unscoped
and without digests they cannot be checked, so they are not replayed after the upgrade).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("caller", sa.String(length=100), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "service", "caller", "request_id", name=op.f("pk_idempotency_records")
        ),
    )
    op.drop_constraint(op.f("uq_reviews_request_id"), "reviews", type_="unique")


def downgrade() -> None:
    # Ids reused by different callers since the upgrade: only the first review keeps its id.
    op.execute(
        """
        UPDATE reviews SET request_id = NULL
        WHERE request_id IS NOT NULL
          AND id <> (SELECT min(r.id) FROM reviews r WHERE r.request_id = reviews.request_id)
        """
    )
    op.create_unique_constraint(op.f("uq_reviews_request_id"), "reviews", ["request_id"])
    op.drop_table("idempotency_records")
