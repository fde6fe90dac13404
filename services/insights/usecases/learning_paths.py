"""GetLearningPaths: read the persisted paths of a team; compute them (for RefreshInsights and
the background refresh, and once for a team that has none persisted yet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from services.insights.domain.learning_paths import (
    LearningPath,
    PathEvidence,
    PathPolicy,
    rank_paths,
)
from services.insights.usecases.reads import PersistedPath

EXAMPLES_PER_PATH = 5


class PathReads(Protocol):
    async def path_evidence(
        self, *, team_id: int, first_day: date, last_day: date, half_life: float, recent_since: date
    ) -> list[tuple[str, str, int, int, float, int]]: ...
    async def example_findings(
        self,
        *,
        team_id: int,
        categories: Sequence[str],
        first_day: date,
        last_day: date,
        per_category: int,
    ) -> dict[str, list[int]]: ...
    async def persisted_paths(self, team_id: int) -> list[PersistedPath]: ...


@dataclass(frozen=True)
class PathsView:
    paths: list[LearningPath]
    computed_at: datetime | None
    """When they were persisted; None when computed for this answer."""


async def compute_paths(
    reads: PathReads, *, team_id: int, today: date, policy: PathPolicy, max_paths: int
) -> list[LearningPath]:
    first = today - timedelta(days=policy.lookback_days - 1)
    rows = await reads.path_evidence(
        team_id=team_id,
        first_day=first,
        last_day=today,
        half_life=policy.half_life_days,
        recent_since=today - timedelta(days=policy.recent_days - 1),
    )
    evidence = [PathEvidence(c, r, s, n, d, x) for c, r, s, n, d, x in rows]
    paths = rank_paths(evidence, policy, max_paths=max_paths)
    if not paths:
        return []
    examples = await reads.example_findings(
        team_id=team_id,
        categories=[p.category for p in paths],
        first_day=first,
        last_day=today,
        per_category=EXAMPLES_PER_PATH,
    )
    return [
        replace(path, example_finding_ids=tuple(examples.get(path.category, ()))) for path in paths
    ]


def path_evidence_json(path: LearningPath) -> dict[str, Any]:
    """What learning_paths.evidence stores: everything but rank, category and weight."""
    return {
        "real_findings": path.real_findings,
        "critical_findings": path.critical_findings,
        "high_findings": path.high_findings,
        "recent_findings": path.recent_findings,
        "top_rules": list(path.top_rules),
        "recommendation": path.recommendation,
        "example_finding_ids": list(path.example_finding_ids),
    }


def path_from_persisted(row: PersistedPath) -> LearningPath:
    e = row.evidence
    return LearningPath(
        rank=row.rank,
        category=row.category,
        weight=row.weight,
        real_findings=int(e.get("real_findings", 0)),
        critical_findings=int(e.get("critical_findings", 0)),
        high_findings=int(e.get("high_findings", 0)),
        recent_findings=int(e.get("recent_findings", 0)),
        top_rules=tuple(e.get("top_rules", ())),
        recommendation=str(e.get("recommendation", "")),
        example_finding_ids=tuple(int(i) for i in e.get("example_finding_ids", ())),
    )


async def read_paths(
    reads: PathReads, *, team_id: int, today: date, policy: PathPolicy, max_paths: int
) -> PathsView:
    """The persisted paths; a team with none persisted yet gets them computed for this answer
    (readers normally never wait: RefreshInsights and the background refresh persist them)."""
    persisted = await reads.persisted_paths(team_id)
    if persisted:
        return PathsView(
            [path_from_persisted(row) for row in persisted[:max_paths]],
            max(row.created_at for row in persisted),
        )
    paths = await compute_paths(
        reads, team_id=team_id, today=today, policy=policy, max_paths=max_paths
    )
    return PathsView(paths, None)
