"""Where an insight applies: a team or one repository. Never a person."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ScopeType(IntEnum):
    """Values match ``reviewlearn.common.v1.ScopeType``."""

    TEAM = 2
    REPOSITORY = 3


@dataclass(frozen=True)
class ScopeRef:
    """A scope as a caller names it: a team name or a repository URL."""

    scope_type: ScopeType
    name: str

    @property
    def label(self) -> str:
        return f"{'team' if self.scope_type is ScopeType.TEAM else 'repository'} {self.name!r}"


@dataclass(frozen=True)
class ResolvedScope:
    """A scope found in the database: its team (always) and, for a repository, its id."""

    ref: ScopeRef
    team_id: int
    team_name: str
    repository_id: int | None = None

    def cache_part(self) -> str:
        if self.repository_id is None:
            return f"t{self.team_id}"
        return f"t{self.team_id}r{self.repository_id}"
