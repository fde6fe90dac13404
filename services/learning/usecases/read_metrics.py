"""The learning service's reads: metrics, thresholds, patterns and models of a scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.learning.domain.learned_state import LearnedState, ThresholdEntry
from services.learning.domain.metrics import MetricView
from services.learning.domain.model import ModelSummary
from services.learning.domain.scopes import GLOBAL_SCOPE, Scope, ScopeType
from services.learning.storage.state_repository import FoldPosition
from services.learning.storage.transactions import Transaction
from shared.db.models import PatternRow
from shared.errors import FieldViolation, InvalidArgument, NotFound


class ReadStore(Protocol):
    async def team_id(self, name: str) -> int | None: ...
    async def repository_id(self, url: str) -> int | None: ...
    async def scope_names(self) -> tuple[dict[int, str], dict[int, str]]: ...
    async def fold_position(self) -> FoldPosition: ...
    async def backlog(self) -> int: ...
    async def patterns(
        self,
        *,
        scope_type: int,
        scope_id: int,
        pattern_type: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[PatternRow]: ...


class StateSource(Protocol):
    async def current(self) -> LearnedState: ...
    async def refresh_if_stale(self, *, max_age: float) -> None: ...


@dataclass(frozen=True)
class ScopeName:
    """A scope as people name it: a team name or a repository URL ("" for global)."""

    scope_type: int
    name: str


@dataclass(frozen=True)
class MetricsPage:
    metrics: tuple[MetricView, ...]
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


@dataclass(frozen=True)
class ThresholdsView:
    thresholds: tuple[ThresholdView, ...]
    last_tune: datetime | None
    stale: bool
    model: ModelSummary | None


async def resolve(store: ReadStore, scope: ScopeName) -> Scope:
    if scope.scope_type == ScopeType.GLOBAL:
        return GLOBAL_SCOPE
    if not scope.name:
        raise InvalidArgument([FieldViolation("scope.id", "name the team or repository")])
    if scope.scope_type == ScopeType.TEAM:
        team_id = await store.team_id(scope.name)
        if team_id is None:
            raise NotFound(f"no team {scope.name!r}", reason="TEAM_NOT_FOUND")
        return (ScopeType.TEAM, team_id)
    repository_id = await store.repository_id(scope.name)
    if repository_id is None:
        raise NotFound(f"no repository {scope.name!r}", reason="REPOSITORY_NOT_FOUND")
    return (ScopeType.REPOSITORY, repository_id)


async def scope_names(store: ReadStore) -> dict[Scope, ScopeName]:
    teams, repositories = await store.scope_names()
    names: dict[Scope, ScopeName] = {GLOBAL_SCOPE: ScopeName(ScopeType.GLOBAL, "")}
    for team_id, name in teams.items():
        names[(ScopeType.TEAM, team_id)] = ScopeName(ScopeType.TEAM, name)
    for repository_id, url in repositories.items():
        names[(ScopeType.REPOSITORY, repository_id)] = ScopeName(ScopeType.REPOSITORY, url)
    return names


class ReadLearning:
    def __init__(
        self, *, transaction: Transaction[ReadStore], state: StateSource, stale_after: timedelta
    ) -> None:
        self._transaction = transaction
        self._state = state
        self._stale_after = stale_after

    async def scope_names(self) -> dict[Scope, ScopeName]:
        async with self._transaction() as store:
            return await scope_names(store)

    async def metrics(
        self, scope: ScopeName, *, dimension: int, key: str | None, after: str | None, limit: int
    ) -> MetricsPage:
        """Metrics of a scope in key order; pages continue after a key, so a fold landing
        between two pages never shifts or repeats entries."""
        # Reads of the counts are exact: rebuild now if a fold landed since the last build.
        await self._state.refresh_if_stale(max_age=float("inf"))
        state = await self._state.current()
        async with self._transaction() as store:
            resolved = await resolve(store, scope)
            position = await store.fold_position()
            backlog = await store.backlog()
        views = sorted(
            (
                view
                for (s, d, k), view in state.metrics.views.items()
                if s == resolved
                and d == dimension
                and (key is None or k == key)
                and (after is None or k > after)
            ),
            key=lambda v: v.key,
        )
        page = views[:limit]
        return MetricsPage(
            metrics=tuple(page),
            watermark=state.watermark,
            last_update=position.updated_at,
            backlog=backlog,
            next_after=page[-1].key if len(views) > limit else None,
        )

    async def thresholds(self, scope: ScopeName, *, category: str | None) -> ThresholdsView:
        state = await self._state.current()
        async with self._transaction() as store:
            resolved = await resolve(store, scope)
            names = await scope_names(store)
        chain = state.chain(resolved[1]) if resolved[0] == ScopeType.REPOSITORY else [resolved]
        views: list[ThresholdView] = []
        for name in sorted({c for (_, c) in state.thresholds}):
            if category is not None and name != category:
                continue
            # The most specific scope that has an entry (never the global one for a repository
            # or team: it pools other tenants); say which one it is.
            found = next(
                (
                    s
                    for s in chain
                    if (s, name) in state.thresholds
                    and (s[0] != ScopeType.GLOBAL or resolved == GLOBAL_SCOPE)
                ),
                None,
            )
            if found is not None:
                owner = names.get(found, ScopeName(found[0], str(found[1])))
                views.append(ThresholdView(owner, name, state.thresholds[(found, name)]))
        last_tune = state.last_tune
        stale = last_tune is None or datetime.now(UTC) - last_tune > self._stale_after
        model = state.model.summary() if state.model.samples else None
        return ThresholdsView(tuple(views), last_tune, stale, model)

    async def patterns(
        self,
        scope: ScopeName,
        *,
        pattern_type: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[PatternRow]:
        async with self._transaction() as store:
            resolved = await resolve(store, scope)
            return await store.patterns(
                scope_type=resolved[0],
                scope_id=resolved[1],
                pattern_type=pattern_type,
                after=after,
                limit=limit,
            )
