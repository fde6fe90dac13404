"""The fold's repository: runs the statements of rollup_sql in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.insights.storage import rollup_sql
from services.insights.usecases.fold_rollups import FoldCounts
from shared.log_horizon import WatermarkTable, fold_window

STREAM = "rollups"
WATERMARKS = WatermarkTable(table="insight_fold_state", stream=STREAM)


class RollupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _run(self, sql: str, params: dict[str, Any] | None = None) -> int:
        result = await self._session.execute(text(sql), params or {})
        return int(getattr(result, "rowcount", 0) or 0)

    async def deletions_seen(self) -> int:
        value = await self._session.scalar(
            text("SELECT deletions_seen FROM insight_fold_state WHERE stream = :stream"),
            {"stream": STREAM},
        )
        return int(value or 0)

    async def fold(self) -> FoldCounts:
        """Folds everything new since the watermark; the caller's transaction commits it."""
        window = await fold_window(self._session, WATERMARKS)
        seen = await self.deletions_seen()
        latest_deletion = int(await self._session.scalar(text(rollup_sql.LATEST_DELETION)) or 0)
        for statement in rollup_sql.CREATE_DELTAS:
            await self._run(statement)
        params = {"watermark": window.watermark}
        findings = await self._run(rollup_sql.FOLD_NEW_FINDINGS, params)
        changes = findings
        # A first fold (watermark 0) took every event with its finding already.
        if window.watermark > 0:
            changes += await self._run(rollup_sql.FOLD_NEW_EVENTS, params)
        if latest_deletion != seen:
            for statement in rollup_sql.FOLD_DELETED_FINDINGS:
                changes += await self._run(statement)
        versions: dict[int, int] = {}
        if changes:
            for statement in rollup_sql.APPLY_DELTAS:
                await self._run(statement)
            rows = await self._session.execute(text(rollup_sql.BUMP_CHANGED_TEAMS))
            versions = {int(team): int(version) for team, version in rows}
        if changes or window.advances or latest_deletion != seen:  # an idle poll writes nothing
            await WATERMARKS.advance(self._session, window.horizon)
            await self._run(
                rollup_sql.ADVANCE_COUNTERS,
                {
                    "findings": findings,
                    "changes": changes,
                    "deletions_seen": latest_deletion,
                    "stream": STREAM,
                },
            )
        return FoldCounts(window, findings, changes, versions)

    async def rebuild(self) -> FoldCounts:
        """Rebuilds every state and rollup from the whole log; the watermark moves to now."""
        window = await fold_window(self._session, WATERMARKS)
        latest_deletion = int(await self._session.scalar(text(rollup_sql.LATEST_DELETION)) or 0)
        changes = 0
        for statement in rollup_sql.REBUILD:
            changes += await self._run(statement)
        teams = [int(t) for t in (await self._session.scalars(text(rollup_sql.ALL_TEAMS)))]
        rows = await self._session.execute(text(rollup_sql.BUMP_TEAMS), {"team_ids": teams})
        versions = {int(team): int(version) for team, version in rows}
        await WATERMARKS.advance(self._session, window.horizon)
        await self._run(
            rollup_sql.ADVANCE_COUNTERS,
            {"findings": 0, "changes": 0, "deletions_seen": latest_deletion, "stream": STREAM},
        )
        return FoldCounts(window, 0, changes, versions)

    async def snapshot(
        self, tables: Iterable[str] = tuple(rollup_sql.SNAPSHOTS)
    ) -> dict[str, set[tuple[Any, ...]]]:
        """Every row of the rollup ``tables`` (all of them by default), per table, as
        (key..., count): for comparing a fold with a rebuild or a recount."""
        return {
            table: {
                tuple(row) for row in await self._session.execute(text(rollup_sql.SNAPSHOTS[table]))
            }
            for table in tables
        }

    async def last_fold(self) -> Any:
        return await self._session.scalar(
            text("SELECT updated_at FROM insight_fold_state WHERE stream = :stream"),
            {"stream": STREAM},
        )
