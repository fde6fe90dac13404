"""The learning service's reads: metrics, thresholds and patterns of a scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.calibration import CalibrationCurve
from services.learning.domain.learned_state import MetricView, ThresholdEntry
from services.learning.domain.scopes import GLOBAL_SCOPE, Scope, ScopeType
from services.learning.model_cache import ModelStore
from services.learning.storage.learning_repository import LearningRepository
from shared.db.models import PatternRow
from shared.errors import FieldViolation, InvalidArgument, NotFound


@dataclass(frozen=True)
class ScopeName:
    """A scope as people name it: a team name or a repository URL ("" for global)."""

    scope_type: int
    name: str


@dataclass(frozen=True)
class MetricsPage:
    metrics: tuple[MetricView, ...]
    names: dict[Scope, ScopeName]
    watermark: int
    last_update: datetime | None
    backlog: int
    next_after: str | None
    """The last key of this page when more follow (the next page starts after it)."""


@dataclass(frozen=True)
class ThresholdView:
    scope: ScopeName
    category: str
    entry: ThresholdEntry
    curve: CalibrationCurve | None


@dataclass(frozen=True)
class ThresholdsView:
    thresholds: tuple[ThresholdView, ...]
    last_tune: datetime | None
    stale: bool


class LearningReads:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: ModelStore,
        stale_after: timedelta,
    ) -> None:
        self._sessions = sessions
        self._models = models
        self._stale_after = stale_after

    async def resolve(self, scope: ScopeName) -> Scope:
        if scope.scope_type == ScopeType.GLOBAL:
            return GLOBAL_SCOPE
        if not scope.name:
            raise InvalidArgument([FieldViolation("scope.id", "name the team or repository")])
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            if scope.scope_type == ScopeType.TEAM:
                team_id = await repo.team_id(scope.name)
                if team_id is None:
                    raise NotFound(f"no team {scope.name!r}", reason="TEAM_NOT_FOUND")
                return (ScopeType.TEAM, team_id)
            repository = await repo.repository(scope.name)
        if repository is None:
            raise NotFound(f"no repository {scope.name!r}", reason="REPOSITORY_NOT_FOUND")
        return (ScopeType.REPOSITORY, repository[0])

    async def scope_names(self) -> dict[Scope, ScopeName]:
        async with self._sessions.begin() as session:
            teams, repositories, _ = await LearningRepository(session).scope_names()
        names: dict[Scope, ScopeName] = {GLOBAL_SCOPE: ScopeName(ScopeType.GLOBAL, "")}
        names.update(
            {(ScopeType.TEAM, i): ScopeName(ScopeType.TEAM, name) for i, name in teams.items()}
        )
        names.update(
            {
                (ScopeType.REPOSITORY, i): ScopeName(ScopeType.REPOSITORY, url)
                for i, url in repositories.items()
            }
        )
        return names

    async def metrics(
        self, scope: ScopeName, *, dimension: int, key: str | None, after: str | None, limit: int
    ) -> MetricsPage:
        """Metrics of a scope in key order; pages continue after a key, so a fold landing
        between two pages never shifts or repeats entries."""
        resolved = await self.resolve(scope)
        # Reads of the counts are exact: rebuild now if a fold landed since the last build.
        await self._models.refresh_if_stale(max_age=float("inf"))
        model = await self._models.current()
        views = sorted(
            (
                view
                for (s, d, k), view in model.metrics.items()
                if s == resolved
                and d == dimension
                and (key is None or k == key)
                and (after is None or k > after)
            ),
            key=lambda v: v.key,
        )
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            state = await repo.fold_state()
            backlog = await repo.backlog(state.watermark if state else 0)
        page = views[:limit]
        return MetricsPage(
            metrics=tuple(page),
            names={resolved: scope},
            watermark=model.watermark,
            last_update=state.updated_at if state else None,
            backlog=backlog,
            next_after=page[-1].key if len(views) > limit else None,
        )

    async def thresholds(self, scope: ScopeName, *, category: str | None) -> ThresholdsView:
        resolved = await self.resolve(scope)
        model = await self._models.current()
        chain = _chain(model.team_of_repository, resolved)
        names = await self.scope_names()
        categories = sorted({c for (_, c) in model.thresholds} | {c for (_, c) in model.curves})
        views: list[ThresholdView] = []
        for name in categories:
            if category is not None and name != category:
                continue
            # The most specific scope that has an entry: say which one it is.
            found = next((s for s in chain if (s, name) in model.thresholds), None)
            curve = next(
                (model.curves[(s, name)] for s in chain if (s, name) in model.curves), None
            )
            if found is not None:
                owner = names.get(found, ScopeName(found[0], str(found[1])))
                views.append(ThresholdView(owner, name, model.thresholds[(found, name)], curve))
        last_tune = model.last_tune
        stale = last_tune is None or datetime.now(UTC) - last_tune > self._stale_after
        return ThresholdsView(tuple(views), last_tune, stale)

    async def patterns(
        self,
        scope: ScopeName,
        *,
        pattern_type: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[PatternRow]:
        resolved = await self.resolve(scope)
        async with self._sessions.begin() as session:
            return await LearningRepository(session).patterns(
                scope_type=resolved[0],
                scope_id=resolved[1],
                pattern_type=pattern_type,
                after=after,
                limit=limit,
            )


def _chain(team_of_repository: dict[int, int], scope: Scope) -> list[Scope]:
    if scope[0] == ScopeType.REPOSITORY:
        team = team_of_repository.get(scope[1])
        return [scope, *([(ScopeType.TEAM, team)] if team is not None else []), GLOBAL_SCOPE]
    if scope[0] == ScopeType.TEAM:
        return [scope, GLOBAL_SCOPE]
    return [GLOBAL_SCOPE]
