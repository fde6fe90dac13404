"""SQL of the learning service. Works inside the caller's transaction and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger, Text

from services.learning.domain.learned_state import MetricInput
from shared.db.models import (
    CalibrationCurveRow,
    ConfidenceThresholdRow,
    Finding,
    FindingOutcome,
    FoldState,
    IdempotentResponse,
    LearningMetric,
    PatternRow,
    Repository,
    Team,
    ThresholdChange,
)
from shared.outcome import Outcome


@dataclass(frozen=True)
class FindingRecord:
    """A registered finding as the ranker needs it."""

    finding_id: int
    repository_id: int
    client_finding_id: str | None
    rule_id: str
    category: str
    severity: int
    confidence: float
    file_path: str
    line_start: int
    message: str
    fingerprint: str


@dataclass(frozen=True)
class OutcomeSample:
    """One decided finding: the data calibration and thresholds are fitted on."""

    team_id: int
    repository_id: int
    rule_id: str
    category: str
    confidence: float
    outcome: int


_METRIC_COLUMNS = (
    LearningMetric.scope_type,
    LearningMetric.scope_id,
    LearningMetric.dimension,
    LearningMetric.key,
    LearningMetric.shown,
    LearningMetric.positive,
    LearningMetric.negative,
    LearningMetric.dismissed,
)


class LearningRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ------------------------------------------------------------------------ scopes

    async def team_id(self, name: str) -> int | None:
        return (
            await self._session.execute(select(Team.id).where(Team.name == name))
        ).scalar_one_or_none()

    async def repository(self, url: str) -> tuple[int, int] | None:
        """(repository id, team id) of a repository URL."""
        row = (
            await self._session.execute(
                select(Repository.id, Repository.team_id).where(Repository.url == url)
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    async def scope_names(self) -> tuple[dict[int, str], dict[int, str], dict[int, int]]:
        """Team names, repository URLs, and each repository's team, by id."""
        teams = {int(i): str(n) for i, n in await self._session.execute(select(Team.id, Team.name))}
        repos: dict[int, str] = {}
        team_of: dict[int, int] = {}
        for repo_id, url, team_id in await self._session.execute(
            select(Repository.id, Repository.url, Repository.team_id)
        ):
            repos[int(repo_id)] = str(url)
            team_of[int(repo_id)] = int(team_id)
        return teams, repos, team_of

    # ------------------------------------------------------------------------ metrics

    async def fold_state(self) -> FoldState | None:
        return await self._session.get(FoldState, "feedback")

    async def backlog(self, watermark: int) -> int:
        from shared.db.models import Feedback

        count = await self._session.execute(
            select(func.count()).select_from(Feedback).where(Feedback.tx_id >= watermark)
        )
        return int(count.scalar_one())

    async def all_metrics(self, dimensions: Sequence[int]) -> list[MetricInput]:
        rows = await self._session.execute(
            select(*_METRIC_COLUMNS).where(LearningMetric.dimension.in_(list(dimensions)))
        )
        return [MetricInput(*row) for row in rows]

    async def rule_categories(self) -> dict[str, str]:
        """Each rule's category (the most recent one, should a bot ever move a rule)."""
        rows = await self._session.execute(
            select(FindingOutcome.rule_id, func.max(FindingOutcome.category)).group_by(
                FindingOutcome.rule_id
            )
        )
        return {str(rule): str(category) for rule, category in rows}

    # ------------------------------------------------------------------------ ranking reads

    async def findings(self, finding_ids: Sequence[int]) -> dict[int, FindingRecord]:
        if not finding_ids:
            return {}
        rows = await self._session.execute(
            select(
                Finding.id,
                Finding.repository_id,
                Finding.client_finding_id,
                Finding.rule_id,
                Finding.category,
                Finding.severity,
                Finding.confidence,
                Finding.file_path,
                Finding.line_start,
                Finding.message,
                Finding.fingerprint,
            ).where(
                Finding.id
                == func.any(bindparam("ids", value=list(finding_ids), type_=ARRAY(BigInteger)))
            )
        )
        return {int(row[0]): FindingRecord(*row) for row in rows}

    async def dismissed_fingerprints(
        self, *, repository_id: int, pull_request: int, fingerprints: Sequence[str]
    ) -> set[str]:
        """Fingerprints dismissed or rejected earlier on this pull request."""
        if not fingerprints:
            return set()
        rows = await self._session.execute(
            select(FindingOutcome.fingerprint)
            .where(
                FindingOutcome.repository_id == repository_id,
                FindingOutcome.pull_request == pull_request,
                FindingOutcome.outcome.in_([int(Outcome.NEGATIVE), int(Outcome.DISMISSED)]),
                FindingOutcome.fingerprint
                == func.any(bindparam("fps", value=list(set(fingerprints)), type_=ARRAY(Text))),
            )
            .distinct()
        )
        return {str(fp) for (fp,) in rows}

    # ------------------------------------------------------------------------ calibration

    async def outcome_samples(self) -> list[OutcomeSample]:
        """Every finding that somebody reacted to, for fitting curves and thresholds."""
        rows = await self._session.execute(
            select(
                FindingOutcome.team_id,
                FindingOutcome.repository_id,
                FindingOutcome.rule_id,
                FindingOutcome.category,
                FindingOutcome.confidence,
                FindingOutcome.outcome,
            ).where(FindingOutcome.outcome != int(Outcome.PENDING))
        )
        return [OutcomeSample(*row) for row in rows]

    async def curves(self) -> list[CalibrationCurveRow]:
        return list((await self._session.execute(select(CalibrationCurveRow))).scalars())

    async def thresholds(self) -> list[ConfidenceThresholdRow]:
        return list((await self._session.execute(select(ConfidenceThresholdRow))).scalars())

    async def replace_curves(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._session.execute(delete(CalibrationCurveRow))
        if rows:
            await self._session.execute(pg_insert(CalibrationCurveRow), list(rows))

    async def replace_thresholds(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._session.execute(delete(ConfidenceThresholdRow))
        if rows:
            await self._session.execute(pg_insert(ConfidenceThresholdRow), list(rows))

    async def add_threshold_changes(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._session.execute(pg_insert(ThresholdChange), list(rows))

    async def last_tune_time(self) -> datetime | None:
        return (
            await self._session.execute(select(func.max(ConfidenceThresholdRow.updated_at)))
        ).scalar_one_or_none()

    # ------------------------------------------------------------------------ idempotency

    async def stored_response(self, request_id: str) -> bytes | None:
        row = await self._session.get(IdempotentResponse, ("learning", request_id))
        return bytes(row.response) if row else None

    async def store_response(self, request_id: str, method: str, response: bytes) -> None:
        await self._session.execute(
            pg_insert(IdempotentResponse)
            .values(service="learning", request_id=request_id, method=method, response=response)
            .on_conflict_do_nothing()
        )

    # ------------------------------------------------------------------------ patterns

    async def pattern_stats(self, *, recent_since: datetime, prior_since: datetime) -> list[Any]:
        """Per scope and pattern key: occurrences, outcomes, and recent vs prior counts."""
        statement = text(
            f"""
            WITH scoped AS (
                SELECT s.scope_type, s.scope_id, o.pattern_key, o.rule_id, o.category,
                       o.outcome, o.created_at, o.finding_id
                FROM finding_outcomes o
                CROSS JOIN LATERAL (VALUES (1, 0::bigint), (2, o.team_id), (3, o.repository_id))
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
