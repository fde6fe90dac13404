"""What the read use cases need from storage: aggregates over the rollups, as plain rows.

The repository Protocols of the read use cases are built from these methods; the SQL is in
storage.insights_repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from services.insights.domain.scopes import ResolvedScope, ScopeRef


@dataclass(frozen=True)
class OutcomeRow:
    """Findings of one (category, rule, severity, outcome) in a window."""

    category: str
    rule_id: str
    severity: int
    outcome: int
    findings: int


@dataclass(frozen=True)
class WeekRow:
    week_start: date
    category: str
    outcome: int
    findings: int


@dataclass(frozen=True)
class PersistedPath:
    rank: int
    category: str
    weight: float
    evidence: dict[str, Any]
    created_at: datetime


class ScopeResolver(Protocol):
    async def resolve(self, ref: ScopeRef) -> ResolvedScope | None: ...


class RollupReads(ScopeResolver, Protocol):
    async def outcome_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[OutcomeRow]: ...

    async def action_histogram(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[tuple[str, int, int]]:
        """(category, bucket, findings)."""
        ...

    async def activity(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> tuple[int, int]:
        """(reviews, active repositories)."""
        ...

    async def global_counts(self, first_day: date, last_day: date) -> list[tuple[str, int, int]]:
        """(category, outcome, findings) over every team."""
        ...

    async def weekly_counts(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> list[WeekRow]: ...

    async def weekly_reviews(
        self, scope: ResolvedScope, first_day: date, last_day: date
    ) -> dict[date, int]: ...

    async def data_as_of(self) -> datetime | None: ...
