"""Writes of RefreshInsights: learning paths, trend points and their archive, metric and ROI
snapshots. Every write compares with what is stored and touches only what differs, so a
repeated refresh writes nothing (and reports zero rows)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import text

from services.insights.storage.insights_repository import InsightsRepository
from services.insights.storage.rollup_sql import BUMP_TEAMS

# Two replicas refreshing at once would both rewrite a team's paths; they take turns.
REFRESH_LOCK = "SELECT pg_advisory_xact_lock(hashtext('reviewlearn.insights.refresh'))"

UPSERT_TREND_POINTS = """
INSERT INTO insights_trends AS t (team_id, period, metric, category, value, samples, created_at)
SELECT :team, p.period, p.metric, p.category, p.value, p.samples, now()
FROM unnest(CAST(:periods AS date[]), CAST(:metrics AS smallint[]), CAST(:categories AS text[]),
            CAST(:values AS float8[]), CAST(:samples AS bigint[]))
    AS p(period, metric, category, value, samples)
ON CONFLICT (team_id, period, metric, category) DO UPDATE
SET value = EXCLUDED.value, samples = EXCLUDED.samples, created_at = now()
WHERE (t.value, t.samples) IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.samples)
"""

ARCHIVE_TRENDS = [
    """
    INSERT INTO insights_trends_archive AS a (team_id, period, metric, category, value, samples)
    SELECT team_id, period, metric, category, value, samples FROM insights_trends
    WHERE team_id = :team AND period < :before
    ON CONFLICT (team_id, period, metric, category) DO UPDATE
    SET value = EXCLUDED.value, samples = EXCLUDED.samples, archived_at = now()
    """,
    "DELETE FROM insights_trends WHERE team_id = :team AND period < :before",
]


class PersistedInsightsRepository(InsightsRepository):
    async def lock_refresh(self) -> None:
        await self._session.execute(text(REFRESH_LOCK))

    async def replace_paths(self, team_id: int, rows: Sequence[dict[str, Any]]) -> int:
        """Replaces the team's paths when they differ from ``rows``; returns rows written."""
        stored = [
            {"rank": p.rank, "category": p.category, "weight": p.weight, "evidence": p.evidence}
            for p in await self.persisted_paths(team_id)
        ]
        if stored == list(rows):
            return 0
        deleted = await self._session.execute(
            text("DELETE FROM learning_paths WHERE team_id = :team"), {"team": team_id}
        )
        for row in rows:
            await self._session.execute(
                text(
                    "INSERT INTO learning_paths (team_id, rank, category, weight, evidence) "
                    "VALUES (:team, :rank, :category, :weight, CAST(:evidence AS jsonb))"
                ),
                {**row, "team": team_id, "evidence": json.dumps(row["evidence"])},
            )
        return int(getattr(deleted, "rowcount", 0) or 0) + len(rows)

    async def upsert_trend_points(
        self, team_id: int, points: Sequence[tuple[date, int, str, float, int]]
    ) -> int:
        if not points:
            return 0
        periods, metrics, categories, values, samples = (list(c) for c in zip(*points, strict=True))
        result = await self._session.execute(
            text(UPSERT_TREND_POINTS),
            {
                "team": team_id,
                "periods": periods,
                "metrics": metrics,
                "categories": categories,
                "values": values,
                "samples": samples,
            },
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def archive_trends(self, team_id: int, before: date) -> int:
        await self._session.execute(text(ARCHIVE_TRENDS[0]), {"team": team_id, "before": before})
        result = await self._session.execute(
            text(ARCHIVE_TRENDS[1]), {"team": team_id, "before": before}
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def upsert_snapshot(
        self,
        table: str,
        *,
        team_id: int,
        period_start: datetime,
        period_end: datetime,
        data: dict[str, Any],
    ) -> int:
        """``team_metrics`` or ``roi_reports``: one row per team and period."""
        result = await self._session.execute(
            text(
                f"INSERT INTO {table} AS s (team_id, period_start, period_end, data) "
                "VALUES (:team, :start, :end, CAST(:data AS jsonb)) "
                "ON CONFLICT (team_id, period_start, period_end) DO UPDATE "
                "SET data = EXCLUDED.data, created_at = now() WHERE s.data <> EXCLUDED.data"
            ),
            {"team": team_id, "start": period_start, "end": period_end, "data": json.dumps(data)},
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def bump_teams(self, team_ids: Sequence[int]) -> dict[int, int]:
        rows = await self._session.execute(text(BUMP_TEAMS), {"team_ids": list(team_ids)})
        return {int(team): int(version) for team, version in rows}
