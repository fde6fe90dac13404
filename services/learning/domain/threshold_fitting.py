"""ConfidenceTuner's fitting: calibration curves and thresholds per scope and category. Pure.

Scopes nest (repository → team → global). A scope gets its own curve when it has enough data,
and its own threshold when enough findings decide it; otherwise it inherits its parent's.
A threshold is on the bot's raw confidence: findings below it are suppressed, so that the shown
ones keep the effective false-positive rate under the target (Tricorder's bar, 10%), judged on the
Wilson upper bound. Noisy rules are left out of threshold fitting: they are suppressed anyway, and
counting them would hold the good rules of their category to their noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.learning.domain.calibration import CalibrationCurve, fit_calibration
from services.learning.domain.learned_state import ThresholdEntry
from services.learning.domain.scopes import GLOBAL_SCOPE, Scope, ScopeType
from services.learning.domain.thresholds import choose_threshold

OWN = "own"
"""The target is met on the Wilson upper bound: certified."""
POINT_ESTIMATE = "point_estimate"
"""Met on the observed rate only: not yet enough evidence for the bound."""
UNREACHABLE = "unreachable"
"""Not met at any confidence: the threshold with the lowest upper bound, as a best effort."""
DEFAULT = "default"
"""No data anywhere: no threshold."""


@dataclass(frozen=True)
class TuneParameters:
    target_not_useful_rate: float = 0.10
    min_samples: int = 50
    min_isotonic_samples: int = 200
    min_sigmoid_samples: int = 30


@dataclass(frozen=True)
class Samples:
    """Findings somebody reacted to, as parallel arrays."""

    team_id: npt.NDArray[np.int64]
    repository_id: npt.NDArray[np.int64]
    rule_id: npt.NDArray[np.object_]
    category: npt.NDArray[np.object_]
    confidence: npt.NDArray[np.float64]
    useful: npt.NDArray[np.bool_]

    @property
    def size(self) -> int:
        return int(self.confidence.size)


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


def fit_curves(
    samples: Samples, team_of_repository: Mapping[int, int], parameters: TuneParameters
) -> dict[tuple[Scope, str], CalibrationCurve]:
    """A curve per category globally, and per team and repository that have enough data."""
    curves: dict[tuple[Scope, str], CalibrationCurve] = {}

    def fit(indices: npt.NDArray[np.intp], parent: CalibrationCurve | None) -> CalibrationCurve:
        return fit_calibration(
            samples.confidence[indices],
            samples.useful[indices],
            min_isotonic_samples=parameters.min_isotonic_samples,
            min_sigmoid_samples=parameters.min_sigmoid_samples,
            parent=parent,
        )

    for category in np.unique(samples.category):
        in_category = samples.category == category
        global_curve = fit(np.flatnonzero(in_category), None)
        curves[(GLOBAL_SCOPE, str(category))] = global_curve
        for team, indices in _groups(samples.team_id, in_category).items():
            if indices.size >= parameters.min_sigmoid_samples:
                curves[((ScopeType.TEAM, team), str(category))] = fit(indices, global_curve)
        for repository, indices in _groups(samples.repository_id, in_category).items():
            if indices.size >= parameters.min_sigmoid_samples:
                team_curve = curves.get(
                    ((ScopeType.TEAM, team_of_repository.get(repository, -1)), str(category))
                )
                curves[((ScopeType.REPOSITORY, repository), str(category))] = fit(
                    indices, team_curve or global_curve
                )
    return curves


def fit_thresholds(
    samples: Samples,
    *,
    noisy_rules: frozenset[str],
    team_of_repository: Mapping[int, int],
    parameters: TuneParameters,
) -> dict[tuple[Scope, str], ThresholdEntry]:
    """A resolved threshold for every scope and category that has reactions."""
    kept = (
        ~np.isin(samples.rule_id, list(noisy_rules)) if noisy_rules else np.ones(samples.size, bool)
    )
    entries: dict[tuple[Scope, str], ThresholdEntry] = {}

    def decide(
        indices: npt.NDArray[np.intp], parent: ThresholdEntry | None, parent_name: str
    ) -> ThresholdEntry:
        decision = choose_threshold(
            samples.confidence[indices],
            samples.useful[indices],
            target=parameters.target_not_useful_rate,
            min_samples=parameters.min_samples,
        )
        if decision.threshold is not None:
            return ThresholdEntry(
                decision.threshold,
                OWN,
                parameters.target_not_useful_rate,
                decision.not_useful_upper,
                decision.sample_size,
            )
        if not decision.reachable:
            fallback = decision.point_threshold
            return ThresholdEntry(
                fallback if fallback is not None else decision.best_threshold,
                POINT_ESTIMATE if fallback is not None else UNREACHABLE,
                parameters.target_not_useful_rate,
                decision.not_useful_upper,
                decision.sample_size,
            )
        if parent is None:
            return ThresholdEntry(
                None,
                DEFAULT,
                parameters.target_not_useful_rate,
                decision.not_useful_upper,
                decision.sample_size,
            )
        return ThresholdEntry(
            parent.threshold,
            f"inherited:{parent_name}",
            parameters.target_not_useful_rate,
            parent.not_useful_upper,
            decision.sample_size,
        )

    for category in np.unique(samples.category):
        in_category = (samples.category == category) & kept
        name = str(category)
        global_entry = decide(np.flatnonzero(in_category), None, "")
        entries[(GLOBAL_SCOPE, name)] = global_entry
        for team, indices in _groups(samples.team_id, in_category).items():
            entries[((ScopeType.TEAM, team), name)] = decide(indices, global_entry, "global")
        for repository, indices in _groups(samples.repository_id, in_category).items():
            team_entry = entries.get(
                ((ScopeType.TEAM, team_of_repository.get(repository, -1)), name)
            )
            parent, parent_name = (team_entry, "team") if team_entry else (global_entry, "global")
            entries[((ScopeType.REPOSITORY, repository), name)] = decide(
                indices, parent, parent_name
            )
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


def samples_from_rows(
    rows: Sequence[tuple[int, int, str, str, float, bool]],
) -> Samples:
    """(team id, repository id, rule id, category, confidence, useful) rows as arrays."""
    if not rows:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_o = np.zeros(0, dtype=object)
        return Samples(empty_i, empty_i, empty_o, empty_o, np.zeros(0), np.zeros(0, dtype=bool))
    team, repository, rule, category, confidence, useful = zip(*rows, strict=True)
    return Samples(
        team_id=np.asarray(team, dtype=np.int64),
        repository_id=np.asarray(repository, dtype=np.int64),
        rule_id=np.asarray(rule, dtype=object),
        category=np.asarray(category, dtype=object),
        confidence=np.asarray(confidence, dtype=np.float64),
        useful=np.asarray(useful, dtype=bool),
    )
