"""Where a number applies (scopes) and what it is counted by (dimensions).

Both are stored as SMALLINT in ``learning_metrics`` and friends; these enums are the one place
their values are written down, and the fold's SQL is generated from them.
"""

from __future__ import annotations

from enum import IntEnum


class ScopeType(IntEnum):
    """Values match ``reviewlearn.common.v1.ScopeType``."""

    GLOBAL = 1
    TEAM = 2
    REPOSITORY = 3


class Dimension(IntEnum):
    """Values match ``reviewlearn.learning.v1.Dimension``."""

    ALL = 1
    CATEGORY = 2
    SEVERITY = 3
    RULE = 4


Scope = tuple[int, int]
"""(a ScopeType value, a team or repository id); the global scope is (GLOBAL, 0)."""
GLOBAL_SCOPE: Scope = (ScopeType.GLOBAL, 0)

ALL_KEY = "*"
"""The key of the ALL dimension."""

SEVERITY_NAMES = ("info", "low", "medium", "high", "critical")
"""Severity 1..5 by name: the keys of the SEVERITY dimension."""


def scope_name(scope_type: int) -> str:
    return ScopeType(scope_type).name.lower()


def scope_chain(repository_id: int | None, team_of_repository: dict[int, int]) -> list[Scope]:
    """Most specific first: the repository, its team, global."""
    if repository_id is None:
        return [GLOBAL_SCOPE]
    chain: list[Scope] = [(ScopeType.REPOSITORY, repository_id)]
    team = team_of_repository.get(repository_id)
    if team is not None:
        chain.append((ScopeType.TEAM, team))
    chain.append(GLOBAL_SCOPE)
    return chain
