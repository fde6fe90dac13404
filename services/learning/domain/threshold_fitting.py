"""Tricorder operating points on the model's probability, per scope and category. Pure.

For each category of each scope (repository, team, and global for reference) the threshold is
the lowest P(acted on) such that the findings at or above it keep the effective false-positive
rate under the target (Tricorder's bar, 10%), judged on the Wilson upper bound with a minimum
sample size. A repository with too little data inherits its team's threshold; a team never
inherits the global one, which pools unrelated tenants. Where no threshold meets the target it
is "unreachable" and never hides anything (see ``domain.suppression`` for what does hide).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.learning.domain.learned_state import ThresholdEntry
from services.learning.domain.scopes import GLOBAL_SCOPE, Scope, ScopeType
from services.learning.domain.thresholds import choose_threshold

OWN = "own"
"""The target is met on the Wilson upper bound: certified."""
POINT_ESTIMATE = "point_estimate"
"""Met on the observed rate only: not yet enough evidence for the bound."""
UNREACHABLE = "unreachable"
"""Not met at any probability: the threshold with the lowest upper bound, shown as a best
effort and never applied."""
DEFAULT = "default"
"""Too little data and no parent: no threshold."""
INHERITED_TEAM = "inherited:team"


@dataclass(frozen=True)
class ThresholdParameters:
    target_not_useful_rate: float = 0.10
    min_samples: int = 50


@dataclass(frozen=True)
class ThresholdDiff:
    scope: Scope
    category: str
    old: ThresholdEntry | None
    new: ThresholdEntry


def _groups(
    keys: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]
) -> dict[int, npt.NDArray[np.intp]]:
    """Indices of the masked samples, grouped by key."""
    indices = np.flatnonzero(mask)
    if indices.size == 0:
        return {}
    values = keys[indices]
    order = np.argsort(values, kind="stable")
    unique, starts = np.unique(values[order], return_index=True)
    bounds = [*starts[1:], order.size]
    return {int(u): indices[order[s:e]] for u, s, e in zip(unique, starts, bounds, strict=True)}


def fit_thresholds(
    *,
    probability: npt.NDArray[np.float64],
    useful: npt.NDArray[np.bool_],
    category: npt.NDArray[np.object_],
    team_id: npt.NDArray[np.int64],
    repository_id: npt.NDArray[np.int64],
    team_of_repository: Mapping[int, int],
    parameters: ThresholdParameters,
) -> dict[tuple[Scope, str], ThresholdEntry]:
    """A resolved threshold for every scope and category that has outcomes."""
    entries: dict[tuple[Scope, str], ThresholdEntry] = {}
    target = parameters.target_not_useful_rate

    def decide(indices: npt.NDArray[np.intp], parent: ThresholdEntry | None) -> ThresholdEntry:
        decision = choose_threshold(
            probability[indices], useful[indices], target=target, min_samples=parameters.min_samples
        )
        upper, size = decision.not_useful_upper, decision.sample_size
        if decision.threshold is not None:
            return ThresholdEntry(decision.threshold, OWN, target, upper, size)
        if not decision.reachable:
            if decision.point_threshold is not None:
                return ThresholdEntry(decision.point_threshold, POINT_ESTIMATE, target, upper, size)
            return ThresholdEntry(decision.best_threshold, UNREACHABLE, target, upper, size)
        if parent is None:
            return ThresholdEntry(None, DEFAULT, target, upper, size)
        return ThresholdEntry(
            parent.threshold, INHERITED_TEAM, target, parent.not_useful_upper, size
        )

    for name in sorted(set(category.tolist())):
        in_category = category == name
        entries[(GLOBAL_SCOPE, name)] = decide(np.flatnonzero(in_category), None)
        for team, indices in _groups(team_id, in_category).items():
            entries[((ScopeType.TEAM, team), name)] = decide(indices, None)
        for repository, indices in _groups(repository_id, in_category).items():
            team_entry = entries.get(
                ((ScopeType.TEAM, team_of_repository.get(repository, -1)), name)
            )
            entries[((ScopeType.REPOSITORY, repository), name)] = decide(indices, team_entry)
    return entries


def diff_thresholds(
    old: Mapping[tuple[Scope, str], ThresholdEntry], new: Mapping[tuple[Scope, str], ThresholdEntry]
) -> tuple[list[ThresholdDiff], int]:
    """Entries whose threshold or source changed, and how many stayed the same."""
    changes: list[ThresholdDiff] = []
    unchanged = 0
    for key, entry in sorted(new.items(), key=lambda item: (item[0][0], item[0][1])):
        before = old.get(key)
        if (
            before is not None
            and before.threshold == entry.threshold
            and before.source == entry.source
        ):
            unchanged += 1
        else:
            changes.append(ThresholdDiff(key[0], key[1], before, entry))
    return changes, unchanged
