"""Alerting: who holds a notification's delivery lease (``alert_notifications.claim_token``).

A claim gives every row it leases a new token; only the holder of the current token can record
an attempt or settle the row, so a slow replica whose lease ran out (and whose rows another
replica claimed) cannot overwrite the other's outcome.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 04:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows leased before this revision have no token: they are claimed again once their lease
    # ends, as a replica that died would leave them.
    op.add_column("alert_notifications", sa.Column("claim_token", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("alert_notifications", "claim_token")
