"""What the in-memory learned state is built from: counts, scopes, the active model, thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.learning.domain.metrics import MetricInput
from shared.db.models import (
    ConfidenceThresholdRow,
    FindingOutcome,
    FoldState,
    LearnedModelRow,
    LearningMetric,
    Repository,
    Team,
)

METRIC_COLUMNS = (
    LearningMetric.scope_type,
    LearningMetric.scope_id,
    LearningMetric.dimension,
    LearningMetric.key,
    LearningMetric.shown,
    LearningMetric.positive,
    LearningMetric.negative,
    LearningMetric.dismissed,
)


@dataclass(frozen=True)
class FoldPosition:
    watermark: int
    updated_at: datetime | None


@dataclass(frozen=True)
class ThresholdRecord:
    scope_type: int
    scope_id: int
    category: str
    threshold: float | None
    source: str
    target: float
    not_useful_upper: float
    sample_size: int
    updated_at: datetime


class StateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def fold_position(self) -> FoldPosition:
        state = await self._session.get(FoldState, "feedback")
        if state is None:
            return FoldPosition(0, None)
        return FoldPosition(int(state.watermark), state.updated_at)

    async def metrics(self, dimensions: Sequence[int]) -> list[MetricInput]:
        rows = await self._session.execute(
            select(*METRIC_COLUMNS).where(LearningMetric.dimension.in_(list(dimensions)))
        )
        return [MetricInput(*row) for row in rows]

    async def rule_categories(self) -> dict[str, str]:
        """Each rule's category (the greatest, should a bot ever move a rule)."""
        rows = await self._session.execute(
            select(FindingOutcome.rule_id, func.max(FindingOutcome.category)).group_by(
                FindingOutcome.rule_id
            )
        )
        return {str(rule): str(category) for rule, category in rows}

    async def team_of_repository(self) -> dict[int, int]:
        rows = await self._session.execute(select(Repository.id, Repository.team_id))
        return {int(repository): int(team) for repository, team in rows}

    async def scope_names(self) -> tuple[dict[int, str], dict[int, str]]:
        """Team names and repository URLs by id."""
        teams = {int(i): str(n) for i, n in await self._session.execute(select(Team.id, Team.name))}
        repositories = {
            int(i): str(u)
            for i, u in await self._session.execute(select(Repository.id, Repository.url))
        }
        return teams, repositories

    async def team_id(self, name: str) -> int | None:
        return (
            await self._session.execute(select(Team.id).where(Team.name == name))
        ).scalar_one_or_none()

    async def repository_id(self, url: str) -> int | None:
        return (
            await self._session.execute(select(Repository.id).where(Repository.url == url))
        ).scalar_one_or_none()

    async def active_model_version(self) -> str | None:
        return (
            await self._session.execute(
                select(LearnedModelRow.version).where(LearnedModelRow.active)
            )
        ).scalar_one_or_none()

    async def model_document(self, version: str) -> dict[str, Any] | None:
        return (
            await self._session.execute(
                select(LearnedModelRow.document).where(LearnedModelRow.version == version)
            )
        ).scalar_one_or_none()

    async def thresholds(self) -> list[ThresholdRecord]:
        rows = await self._session.execute(
            select(
                ConfidenceThresholdRow.scope_type,
                ConfidenceThresholdRow.scope_id,
                ConfidenceThresholdRow.category,
                ConfidenceThresholdRow.threshold,
                ConfidenceThresholdRow.source,
                ConfidenceThresholdRow.target,
                ConfidenceThresholdRow.not_useful_upper,
                ConfidenceThresholdRow.sample_size,
                ConfidenceThresholdRow.updated_at,
            )
        )
        return [ThresholdRecord(*row) for row in rows]
