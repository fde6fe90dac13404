"""Recurring patterns: the aggregation they are mined from, and the stored classification."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger

from services.learning.domain.scopes import ScopeType
from shared.db.models import Finding, PatternRow
from shared.outcome import Outcome


class PatternRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def pattern_stats(self, *, recent_since: datetime, prior_since: datetime) -> list[Any]:
        """Per scope and pattern key: occurrences, outcomes, and recent vs prior counts."""
        statement = text(
            f"""
            WITH scoped AS (
                SELECT s.scope_type, s.scope_id, o.pattern_key, o.rule_id, o.category,
                       o.outcome, o.created_at, o.finding_id
                FROM finding_outcomes o
                CROSS JOIN LATERAL (VALUES ({ScopeType.GLOBAL:d}, 0::bigint),
                    ({ScopeType.TEAM:d}, o.team_id), ({ScopeType.REPOSITORY:d}, o.repository_id))
                    AS s(scope_type, scope_id)
            )
            SELECT scope_type, scope_id, pattern_key, max(rule_id), max(category),
                   count(*), count(*) FILTER (WHERE outcome = {int(Outcome.POSITIVE)}),
                   count(*) FILTER (WHERE outcome = {int(Outcome.NEGATIVE)}),
                   count(*) FILTER (WHERE outcome = {int(Outcome.DISMISSED)}),
                   count(*) FILTER (WHERE created_at >= :recent_since),
                   count(*) FILTER (
                       WHERE created_at >= :prior_since AND created_at < :recent_since),
                   min(created_at), max(created_at), min(finding_id)
            FROM scoped
            GROUP BY scope_type, scope_id, pattern_key
            HAVING count(*) >= 2
            """
        )
        result = await self._session.execute(
            statement, {"recent_since": recent_since, "prior_since": prior_since}
        )
        return list(result)

    async def messages(self, finding_ids: Sequence[int]) -> dict[int, str]:
        if not finding_ids:
            return {}
        rows = await self._session.execute(
            select(Finding.id, Finding.message).where(
                Finding.id
                == func.any(bindparam("ids", value=list(finding_ids), type_=ARRAY(BigInteger)))
            )
        )
        return {int(i): str(m) for i, m in rows}

    async def try_lock(self, name: str) -> bool:
        """A transaction-scoped advisory lock: one replica at a time does the named job."""
        result = await self._session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"), {"name": name}
        )
        return bool(result.scalar_one())

    async def replace_patterns(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._session.execute(delete(PatternRow))
        for start in range(0, len(rows), 5000):
            await self._session.execute(pg_insert(PatternRow), list(rows[start : start + 5000]))

    async def patterns(
        self,
        *,
        scope_type: int,
        scope_id: int,
        pattern_type: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[PatternRow]:
        query = (
            select(PatternRow)
            .where(PatternRow.scope_type == scope_type, PatternRow.scope_id == scope_id)
            .order_by(PatternRow.occurrences.desc(), PatternRow.pattern_key)
            .limit(limit)
        )
        if pattern_type is not None:
            query = query.where(PatternRow.pattern_type == pattern_type)
        if after is not None:
            occurrences, key = after
            query = query.where(
                (PatternRow.occurrences < occurrences)
                | ((PatternRow.occurrences == occurrences) & (PatternRow.pattern_key > key))
            )
        return list((await self._session.execute(query)).scalars())
