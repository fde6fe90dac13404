"""RefreshInsights: recompute the persisted insights of some teams (or all), idempotently.

Parts: ``rollups`` (catch up with the feedback log, or rebuild it), ``learning_paths`` (what
readers are served), ``trends`` (weekly points persisted for history, and points older than the
archive age moved to insights_trends_archive), ``team_metrics`` and ``roi`` (snapshots of the
last 30 complete days). Every write touches only what differs from what is stored, so a repeat
with no new feedback writes nothing, and the answer says what changed. The persisted parts are
written in one transaction, after the rollups' own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from services.insights.domain.learning_paths import PathPolicy
from services.insights.domain.rates import RatePolicy
from services.insights.domain.roi import RoiAssumptions
from services.insights.domain.scopes import ResolvedScope, ScopeRef, ScopeType
from services.insights.domain.trends import TrendMetric, TrendPolicy
from services.insights.domain.windows import Window
from services.insights.usecases.fold_rollups import FoldCounts
from services.insights.usecases.learning_paths import PathReads, compute_paths, path_evidence_json
from services.insights.usecases.reads import RollupReads
from services.insights.usecases.roi import roi
from services.insights.usecases.team_metrics import team_metrics
from services.insights.usecases.trends import TrendQuery, complete_weeks, trends
from shared.errors import NotFound

log = logging.getLogger("reviewlearn.insights.refresh")

PARTS = ("rollups", "team_metrics", "trends", "learning_paths", "roi")
SNAPSHOT_DAYS = 30


class RefreshRepository(RollupReads, PathReads, Protocol):
    async def lock_refresh(self) -> None: ...
    async def teams(self) -> list[tuple[int, str]]: ...
    async def replace_paths(self, team_id: int, rows: Sequence[dict[str, Any]]) -> int: ...
    async def upsert_trend_points(
        self, team_id: int, points: Sequence[tuple[date, int, str, float, int]]
    ) -> int: ...
    async def archive_trends(self, team_id: int, before: date) -> int: ...
    async def upsert_snapshot(
        self,
        table: str,
        *,
        team_id: int,
        period_start: datetime,
        period_end: datetime,
        data: dict[str, Any],
    ) -> int: ...
    async def bump_teams(self, team_ids: Sequence[int]) -> dict[int, int]: ...


class Rollups(Protocol):
    async def fold(self) -> FoldCounts: ...
    async def rebuild(self) -> FoldCounts: ...


@dataclass(frozen=True)
class RefreshPolicy:
    rates: RatePolicy
    paths: PathPolicy
    roi: RoiAssumptions
    trend_weeks: int
    max_paths: int
    archive_days: int
    min_group_size: int


@dataclass(frozen=True)
class Change:
    team: str
    part: str
    rows_written: int = 0
    rows_archived: int = 0


@dataclass
class RefreshOutcome:
    parts: list[str]
    teams: int = 0
    changes: list[Change] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return sum(c.rows_written for c in self.changes)

    @property
    def rows_archived(self) -> int:
        return sum(c.rows_archived for c in self.changes)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


class InsightsRefresher:
    def __init__(
        self,
        *,
        transaction: Callable[[], AbstractAsyncContextManager[RefreshRepository]],
        rollups: Rollups,
        policy: RefreshPolicy,
        on_change: Callable[[dict[int, int]], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transaction = transaction
        self._rollups = rollups
        self._policy = policy
        self._on_change = on_change
        self._clock = clock

    async def refresh(
        self,
        *,
        scopes: Sequence[ScopeRef],
        parts: Sequence[str],
        rebuild_rollups: bool = False,
        request_id: str = "",
        team_ids: Sequence[int] = (),
    ) -> RefreshOutcome:
        chosen = [p for p in PARTS if p in parts] if parts else list(PARTS)
        outcome = RefreshOutcome(parts=chosen)
        if "rollups" in chosen:
            counts = await (self._rollups.rebuild() if rebuild_rollups else self._rollups.fold())
            if counts.changes:
                outcome.changes.append(Change("", "rollups", rows_written=counts.changes))
        persisted = [p for p in chosen if p != "rollups"]
        if persisted:
            moved: dict[int, int] = {}
            async with self._transaction() as repository:
                await repository.lock_refresh()
                teams = await self._teams(repository, scopes, team_ids)
                outcome.teams = len(teams)
                for team in teams:
                    changes = await self._refresh_team(repository, team, persisted)
                    outcome.changes += changes
                    if any(c.part == "learning_paths" for c in changes):
                        moved |= await repository.bump_teams([team.team_id])
            if moved:
                self._on_change(moved)  # the answers cached with the old paths are stale now
        log.info(
            "insights refreshed",
            extra={
                "fields": {
                    "request_id": request_id,
                    "parts": chosen,
                    "teams": outcome.teams,
                    "rows_written": outcome.rows_written,
                    "rows_archived": outcome.rows_archived,
                }
            },
        )
        return outcome

    async def refresh_teams(self, *, team_ids: Sequence[int], parts: Sequence[str]) -> None:
        """The background refresh of teams whose feedback was folded."""
        await self.refresh(scopes=[], parts=parts, team_ids=team_ids, request_id="background")

    async def _teams(
        self, repository: RefreshRepository, scopes: Sequence[ScopeRef], team_ids: Sequence[int]
    ) -> list[ResolvedScope]:
        if not scopes:
            wanted = set(team_ids)
            return [
                ResolvedScope(ScopeRef(ScopeType.TEAM, name), team_id, name)
                for team_id, name in await repository.teams()
                if not wanted or team_id in wanted
            ]
        found: dict[int, ResolvedScope] = {}
        for ref in scopes:
            scope = await repository.resolve(ref)
            if scope is None:
                raise NotFound(f"no {ref.label} is known", reason="SCOPE_NOT_FOUND")
            # A repository refreshes its team: persisted insights are per team.
            found[scope.team_id] = ResolvedScope(
                ScopeRef(ScopeType.TEAM, scope.team_name), scope.team_id, scope.team_name
            )
        return list(found.values())

    async def _refresh_team(
        self, repository: RefreshRepository, team: ResolvedScope, parts: Sequence[str]
    ) -> list[Change]:
        policy = self._policy
        today = self._clock().astimezone(UTC).date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
        period = Window(midnight - timedelta(days=SNAPSHOT_DAYS), midnight)
        changes = []
        if "learning_paths" in parts:
            paths = await compute_paths(
                repository,
                team_id=team.team_id,
                today=today,
                policy=policy.paths,
                max_paths=policy.max_paths,
            )
            rows = [
                {
                    "rank": p.rank,
                    "category": p.category,
                    "weight": p.weight,
                    "evidence": _jsonable(path_evidence_json(p)),
                }
                for p in paths
            ]
            written = await repository.replace_paths(team.team_id, rows)
            if written:
                changes.append(Change(team.team_name, "learning_paths", rows_written=written))
        if "trends" in parts:
            changes += await self._refresh_trends(repository, team, today)
        if "team_metrics" in parts:
            view = await team_metrics(repository, team, period, policy.rates)
            data = _jsonable(dataclasses.asdict(dataclasses.replace(view, data_as_of=None)))
            written = await repository.upsert_snapshot(
                "team_metrics",
                team_id=team.team_id,
                period_start=period.start,
                period_end=period.end,
                data=data,
            )
            if written:
                changes.append(Change(team.team_name, "team_metrics", rows_written=written))
        if "roi" in parts:
            money = await roi(repository, team, period, policy.roi)
            written = await repository.upsert_snapshot(
                "roi_reports",
                team_id=team.team_id,
                period_start=period.start,
                period_end=period.end,
                data=_jsonable(dataclasses.asdict(money)),
            )
            if written:
                changes.append(Change(team.team_name, "roi", rows_written=written))
        return changes

    async def _refresh_trends(
        self, repository: RefreshRepository, team: ResolvedScope, today: date
    ) -> list[Change]:
        policy = self._policy
        query = TrendQuery(
            today=today, weeks=policy.trend_weeks, metrics=tuple(TrendMetric), per_category=True
        )
        series = await trends(repository, team, query, _points_only(policy))
        points = [
            (p.week_start, int(t.metric), t.category, p.value, p.samples)
            for t in series
            for p in t.points
            if not p.withheld
        ]
        written = await repository.upsert_trend_points(team.team_id, points)
        oldest = complete_weeks(today, 1)[0] - timedelta(days=policy.archive_days)
        archived = await repository.archive_trends(team.team_id, oldest)
        if written or archived:
            return [Change(team.team_name, "trends", written, archived)]
        return []


def _points_only(policy: RefreshPolicy) -> TrendPolicy:
    """Persisting needs the weekly points, not the tests: a policy that never runs them."""
    return TrendPolicy(min_points=10**9, min_group_size=policy.min_group_size)
