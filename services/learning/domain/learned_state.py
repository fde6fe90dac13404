"""Everything the ranker and the reads know at one moment: the folded counts, the fitted model
and the thresholds of the last tune. Pure and immutable once built, so ranking threads share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from services.learning.domain.features import BoolArray, ObjectArray
from services.learning.domain.metrics import Metrics
from services.learning.domain.model import LogOddsModel, Prediction
from services.learning.domain.scopes import Dimension, Scope, ScopeType, scope_chain, scope_name
from services.learning.domain.suppression import (
    HidingDecision,
    Probation,
    RuleRecord,
    SuppressionPolicy,
    decide,
    probation,
)


@dataclass(frozen=True)
class ThresholdEntry:
    """A Tricorder operating point: the lowest P(acted on) above which the shown findings of a
    scope and category keep the not-useful rate under the target (see threshold_fitting)."""

    threshold: float | None
    source: str
    target: float
    not_useful_upper: float
    sample_size: int
    updated_at: datetime | None = None


@dataclass(frozen=True)
class LearnedState:
    watermark: int
    last_fold: datetime | None
    metrics: Metrics
    model: LogOddsModel
    thresholds: dict[tuple[Scope, str], ThresholdEntry] = field(default_factory=dict)
    last_tune: datetime | None = None

    @property
    def version(self) -> str:
        """The model's version and the fold watermark: both change what a ranking says."""
        return f"{self.model.version}+wm{self.watermark}"

    def chain(self, repository_id: int | None) -> list[Scope]:
        return scope_chain(repository_id, self.metrics.team_of_repository)

    def rule_record(
        self, *, repository_id: int | None, team_id: int | None, rules: ObjectArray
    ) -> RuleRecord:
        """Each finding's rule record in its repository and team: (acted on, outcomes)."""
        unique, inverse = np.unique(rules, return_inverse=True)
        columns = np.zeros((4, len(unique)), dtype=np.int64)
        for i, rule in enumerate(unique.tolist()):
            for row, scope in (
                (0, None if repository_id is None else (ScopeType.REPOSITORY, repository_id)),
                (2, None if team_id is None else (ScopeType.TEAM, team_id)),
            ):
                view = None if scope is None else self.metrics.get(scope, Dimension.RULE, rule)
                if view is not None:
                    columns[row, i] = view.counts.positive
                    columns[row + 1, i] = view.counts.reacted
        gathered = columns[:, inverse.reshape(-1)]
        return RuleRecord(gathered[0], gathered[1], gathered[2], gathered[3])

    def base_rate(self, repository_id: int | None, team_id: int | None) -> float:
        """The share of findings acted on here: the repository's (shrunk toward its team),
        else its team's, else what the model was fitted on, else 1/2."""
        for scope in (
            None if repository_id is None else (ScopeType.REPOSITORY, repository_id),
            None if team_id is None else (ScopeType.TEAM, team_id),
        ):
            rate = None if scope is None else self.metrics.usefulness_of(scope)
            if rate is not None:
                return rate
        base = self.model.base_rate
        return base if math.isfinite(base) else 0.5

    def threshold_for(self, category: str, chain: Sequence[Scope]) -> tuple[float, str]:
        """The category's threshold on P(acted on) (NaN: none) and where it comes from. Only
        the repository's own or its team's: a tenant never inherits another's operating point."""
        for scope in chain:
            if scope[0] == ScopeType.GLOBAL:
                break
            entry = self.thresholds.get((scope, category))
            if entry is not None:
                value = math.nan if entry.threshold is None else entry.threshold
                return value, f"{entry.source}@{scope_name(scope[0])}"
        return math.nan, "none"

    def hiding(
        self,
        *,
        prediction: Prediction,
        rules: ObjectArray,
        never_hide: BoolArray,
        repository_id: int | None,
        team_id: int | None,
        policy: SuppressionPolicy,
    ) -> tuple[HidingDecision, Probation]:
        """What the record says to hide among findings of one repository (see suppression)."""
        record = self.rule_record(repository_id=repository_id, team_id=team_id, rules=rules)
        trial = probation(record, policy)
        base_rate = self.base_rate(repository_id, team_id)
        decision = decide(
            probability=prediction.probability,
            upper=prediction.upper(policy.z),
            base_rate=np.full(len(rules), base_rate),
            on_probation=trial.on_probation,
            never_hide=never_hide,
            policy=policy,
        )
        return decision, trial
