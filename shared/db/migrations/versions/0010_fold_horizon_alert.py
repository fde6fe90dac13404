"""Alerting: the rule on a fold watermark held back by a long-running transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 02:30:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule as services/control/domain/alert_catalogue.py had it at this revision (a unit test
# compares them), frozen: a later change of the catalogue is not a change of what this revision
# seeded. Columns as in 0009: name, signal, comparison, threshold, for (s), keep_firing_for (s),
# severity (2 warning), repeat (s), safeguard, summary, description.
SEEDED_RULES: list[tuple[str, str, str, float, int, int, int, int, bool, str, str]] = [
    ("ReviewlearnFoldHorizonHeld", "fold_horizon_held_seconds", ">", 300, 0, 300, 2, 14400, False,
     "reviewlearn: a transaction has held the fold watermark back for {{ value }} s",
     "A long-running transaction holds the learning fold's watermark back."),
]  # fmt: skip
_CHANNELS = {2: ["slack", "log"]}


def _channels(severity: int) -> list[str]:
    return _CHANNELS[severity]


def upgrade() -> None:
    # 0009's statement, copied rather than imported from a shared helper: what a revision does
    # must not change when a helper changes later.
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
