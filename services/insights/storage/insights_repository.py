"""Reads of the insights service: SQL aggregates over the rollups (never a loop over raw rows).

Every query filters on ``team_id`` and a day range first, which ``ix_*_team_day`` serve; a
repository scope adds ``repository_id`` to the filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Result, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.insights.domain.scopes import ResolvedScope, ScopeRef, ScopeType
from services.insights.usecases.reads import OutcomeRow, PersistedPath, WeekRow
from shared.outcome import Outcome

_IN_TEAM = "team_id = :team AND day BETWEEN :first AND :last"
_IN_REPOSITORY = "team_id = :team AND repository_id = :repository AND day BETWEEN :first AND :last"


@dataclass(frozen=True)
class ScopedQuery:
    """One aggregate as two statements: a team's and a repository's.

    A single statement for both (``:repository IS NULL OR repository_id = :repository``) is
    planned generically once PostgreSQL has seen it prepared five times, and that generic plan
    must read ``repository_id`` from the heap for every row (``ix_*_team_day`` does not hold it):
    a bitmap heap scan of thousands of pages plus a sort, where a team's statement is an
    index-only scan whatever its parameters.
    """

    team: str
    repository: str

    @classmethod
    def of(cls, template: str) -> ScopedQuery:
        """``template``'s ``{scope}`` filled with each scope's filter."""
        return cls(template.format(scope=_IN_TEAM), template.format(scope=_IN_REPOSITORY))

    def sql(self, scope: ResolvedScope) -> str:
        return self.team if scope.repository_id is None else self.repository


OUTCOME_COUNTS = ScopedQuery.of("""
SELECT category, rule_id, severity, outcome, sum(findings)::bigint
FROM insight_rollups WHERE {scope}
GROUP BY category, rule_id, severity, outcome
""")
ACTION_HISTOGRAM = ScopedQuery.of("""
SELECT category, bucket, sum(findings)::bigint
FROM insight_action_times WHERE {scope}
GROUP BY category, bucket
""")
ACTIVITY = ScopedQuery.of("""
SELECT (SELECT coalesce(sum(reviews), 0)::bigint FROM insight_review_rollups WHERE {scope}),
       (SELECT count(DISTINCT repository_id) FROM insight_rollups WHERE {scope})
""")
GLOBAL_COUNTS = """
SELECT category, outcome, sum(findings)::bigint FROM insight_global_rollups
WHERE day BETWEEN :first AND :last GROUP BY category, outcome
"""
WEEKLY_COUNTS = ScopedQuery.of("""
SELECT date_trunc('week', day)::date AS week, category, outcome, sum(findings)::bigint
FROM insight_rollups WHERE {scope}
GROUP BY week, category, outcome
""")
WEEKLY_REVIEWS = ScopedQuery.of("""
SELECT date_trunc('week', day)::date AS week, sum(reviews)::bigint
FROM insight_review_rollups WHERE {scope}
GROUP BY week
""")
PATH_EVIDENCE = f"""
SELECT category, rule_id, severity, sum(findings)::bigint,
    sum(findings * power(0.5, (CAST(:last AS date) - day)::float8 / :half_life)),
    (coalesce(sum(findings) FILTER (WHERE day >= :recent_since), 0))::bigint
FROM insight_rollups
WHERE team_id = :team AND day BETWEEN :first AND :last AND outcome = {int(Outcome.POSITIVE)}
GROUP BY category, rule_id, severity
"""
EXAMPLE_FINDINGS = f"""
SELECT category, finding_id FROM (
    SELECT category, finding_id,
        row_number() OVER (PARTITION BY category ORDER BY created_at DESC, finding_id DESC) AS n
    FROM insight_finding_states
    WHERE team_id = :team AND day BETWEEN :first AND :last
      AND outcome = {int(Outcome.POSITIVE)} AND category = ANY(:categories)
) ranked WHERE n <= :per_category
ORDER BY category, n
"""


class InsightsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _scoped(
        self, query: ScopedQuery, scope: ResolvedScope, first_day: date, last_day: date
    ) -> Result[*tuple[Any, ...]]:
        params: dict[str, Any] = {"team": scope.team_id, "first": first_day, "last": last_day}
        if scope.repository_id is not None:
            params["repository"] = scope.repository_id
        return await self._session.execute(text(query.sql(scope)), params)

    async def resolve(self, ref: ScopeRef) -> ResolvedScope | None:
        if ref.scope_type is ScopeType.TEAM:
            row = (
                await self._session.execute(
                    text("SELECT id, name FROM teams WHERE name = :name"), {"name": ref.name}
                )
            ).first()
            return None if row is None else ResolvedScope(ref, int(row[0]), str(row[1]))
        row = (
            await self._session.execute(
                text(
                    "SELECT r.id, t.id, t.name FROM repositories r "
                    "JOIN teams t ON t.id = r.team_id WHERE r.url = :url"
                ),
                {"url": ref.name},
            )
        ).first()
        if row is None:
            return None
        return ResolvedScope(ref, int(row[1]), str(row[2]), repository_id=int(row[0]))

    async def teams(self) -> list[tuple[int, str]]:
        rows = await self._session.execute(text("SELECT id, name FROM teams ORDER BY name"))
        return [(int(i), str(name)) for i, name in rows]

    async def outcome_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[OutcomeRow]:
        rows = await self._scoped(OUTCOME_COUNTS, scope, first_day, last_day)
        return [OutcomeRow(str(c), str(r), int(s), int(o), int(n)) for c, r, s, o, n in rows]

    async def action_histogram(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[tuple[str, int, int]]:
        rows = await self._scoped(ACTION_HISTOGRAM, scope, first_day, last_day)
        return [(str(c), int(b), int(n)) for c, b, n in rows]

    async def activity(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> tuple[int, int]:
        row = (await self._scoped(ACTIVITY, scope, first_day, last_day)).one()
        return int(row[0] or 0), int(row[1] or 0)

    async def global_counts(self, first_day: date, last_day: date) -> list[tuple[str, int, int]]:
        rows = await self._session.execute(
            text(GLOBAL_COUNTS), {"first": first_day, "last": last_day}
        )
        return [(str(c), int(o), int(n)) for c, o, n in rows]

    async def weekly_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[WeekRow]:
        rows = await self._scoped(WEEKLY_COUNTS, scope, first_day, last_day)
        return [WeekRow(w, str(c), int(o), int(n)) for w, c, o, n in rows]

    async def weekly_reviews(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> dict[date, int]:
        rows = await self._scoped(WEEKLY_REVIEWS, scope, first_day, last_day)
        return {week: int(n) for week, n in rows}

    async def path_evidence(
        self, *, team_id: int, first_day: date, last_day: date, half_life: float, recent_since: date
    ) -> list[tuple[str, str, int, int, float, int]]:
        rows = await self._session.execute(
            text(PATH_EVIDENCE),
            {
                "team": team_id,
                "first": first_day,
                "last": last_day,
                "half_life": half_life,
                "recent_since": recent_since,
            },
        )
        return [(str(c), str(r), int(s), int(n), float(d), int(x)) for c, r, s, n, d, x in rows]

    async def example_findings(
        self,
        *,
        team_id: int,
        categories: Sequence[str],
        first_day: date,
        last_day: date,
        per_category: int,
    ) -> dict[str, list[int]]:
        rows = await self._session.execute(
            text(EXAMPLE_FINDINGS),
            {
                "team": team_id,
                "categories": list(categories),
                "first": first_day,
                "last": last_day,
                "per_category": per_category,
            },
        )
        examples: dict[str, list[int]] = {}
        for category, finding_id in rows:
            examples.setdefault(str(category), []).append(int(finding_id))
        return examples

    async def persisted_paths(self, team_id: int) -> list[PersistedPath]:
        rows = await self._session.execute(
            text(
                "SELECT rank, category, weight, evidence, created_at FROM learning_paths "
                "WHERE team_id = :team ORDER BY rank"
            ),
            {"team": team_id},
        )
        return [PersistedPath(int(r), str(c), float(w), dict(e), t) for r, c, w, e, t in rows]

    async def data_as_of(self) -> datetime | None:
        value: datetime | None = await self._session.scalar(
            text("SELECT updated_at FROM insight_fold_state WHERE stream = 'rollups'")
        )
        return value

    async def team_versions(self) -> dict[int, int]:
        rows = await self._session.execute(
            text("SELECT team_id, version FROM insight_team_versions")
        )
        return {int(team): int(version) for team, version in rows}
