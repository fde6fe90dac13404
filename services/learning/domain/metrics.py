"""Outcome counts per scope and dimension, with honest rates: Wilson intervals and shrinkage.

Pure: the service loads the folded counts and hands them in. Rates are smoothed along two
hierarchies — rule → category → everything, and repository → team → global — by Beta-binomial
shrinkage with a prior strength estimated from sibling groups (empirical Bayes).

Two rates per group, and one vocabulary everywhere:

* acceptance = positive / decided = positive / (positive + negative), what people read;
* usefulness = positive / reacted = positive / (positive + negative + dismissed)
  = 1 - the effective false-positive rate, what the model predicts (P(acted on)) and what
  probation and thresholds judge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.learning.domain.rates import RateSummary, estimate_prior_strength, summarize_rates
from services.learning.domain.scopes import ALL_KEY, GLOBAL_SCOPE, Dimension, Scope, ScopeType


@dataclass(frozen=True)
class Counts:
    shown: int
    positive: int
    negative: int
    dismissed: int

    @property
    def decided(self) -> int:
        return self.positive + self.negative

    @property
    def reacted(self) -> int:
        return self.positive + self.negative + self.dismissed


@dataclass(frozen=True)
class RateView:
    successes: int
    trials: int
    value: float
    lower: float
    upper: float
    smoothed: float


@dataclass(frozen=True)
class MetricView:
    scope: Scope
    dimension: int
    key: str
    counts: Counts
    acceptance: RateView
    usefulness: RateView
    # The Beta prior the usefulness was shrunk with: mean (the parent's rate) and strength.
    usefulness_prior: float = 0.5
    usefulness_strength: float = 0.0

    @property
    def not_useful(self) -> RateView:
        """The effective false-positive rate: (negative + dismissed) / reacted."""
        u = self.usefulness
        return RateView(
            successes=u.trials - u.successes,
            trials=u.trials,
            value=1.0 - u.value if u.trials else 0.0,
            lower=1.0 - u.upper,
            upper=1.0 - u.lower,
            smoothed=1.0 - u.smoothed,
        )


MetricKey = tuple[Scope, int, str]
"""(scope, dimension, key)."""


@dataclass
class Metrics:
    """Every smoothed metric, and the two hierarchies they were smoothed along."""

    views: dict[MetricKey, MetricView] = field(default_factory=dict)
    rule_category: dict[str, str] = field(default_factory=dict)
    team_of_repository: dict[int, int] = field(default_factory=dict)

    def get(self, scope: Scope, dimension: Dimension, key: str) -> MetricView | None:
        return self.views.get((scope, dimension, key))

    def usefulness_of(self, scope: Scope) -> float | None:
        """The scope's smoothed share of findings acted on (None: no outcomes there)."""
        view = self.views.get((scope, Dimension.ALL, ALL_KEY))
        return view.usefulness.smoothed if view is not None and view.usefulness.trials else None


@dataclass(frozen=True)
class MetricInput:
    scope_type: int
    scope_id: int
    dimension: int
    key: str
    shown: int
    positive: int
    negative: int
    dismissed: int


def build_metrics(
    *,
    rows: Iterable[MetricInput],
    rule_category: Mapping[str, str],
    team_of_repository: Mapping[int, int],
) -> Metrics:
    metrics = Metrics(
        rule_category=dict(rule_category), team_of_repository=dict(team_of_repository)
    )
    counts: dict[MetricKey, Counts] = {
        ((r.scope_type, r.scope_id), r.dimension, r.key): Counts(
            r.shown, r.positive, r.negative, r.dismissed
        )
        for r in rows
    }
    # Parents come before children: global before teams before repositories; within a scope,
    # everything before categories and severities before rules.
    levels: dict[tuple[int, int], list[MetricKey]] = defaultdict(list)
    for key in sorted(counts, key=lambda k: (k[0][0], _dimension_rank(k[1]))):
        levels[(key[0][0], key[1])].append(key)
    for level in sorted(levels, key=lambda lv: (lv[0], _dimension_rank(lv[1]))):
        _smooth_level(metrics, counts, levels[level], level)
    return metrics


ROOT_PRIOR_STRENGTH = 2.0


def _dimension_rank(dimension: int) -> int:
    """Parents first: everything, then categories and severities, then rules."""
    return 0 if dimension == Dimension.ALL else (2 if dimension == Dimension.RULE else 1)


def _parent(metrics: Metrics, key: MetricKey) -> MetricKey | None:
    (scope_type, scope_id), dimension, name = key
    if scope_type == ScopeType.REPOSITORY:
        team = metrics.team_of_repository.get(scope_id)
        return (
            ((ScopeType.TEAM, team), dimension, name)
            if team is not None
            else (GLOBAL_SCOPE, dimension, name)
        )
    if scope_type == ScopeType.TEAM:
        return (GLOBAL_SCOPE, dimension, name)
    if dimension == Dimension.ALL:
        return None
    if dimension == Dimension.RULE:
        category = metrics.rule_category.get(name)
        return (
            (GLOBAL_SCOPE, Dimension.CATEGORY, category)
            if category
            else (GLOBAL_SCOPE, Dimension.ALL, "*")
        )
    return (GLOBAL_SCOPE, Dimension.ALL, "*")


def _smooth_level(
    metrics: Metrics,
    counts: Mapping[MetricKey, Counts],
    keys: Sequence[MetricKey],
    level: tuple[int, int],
) -> None:
    """Smooths one level (a scope type × dimension) toward its already smoothed parents."""
    positive = np.array([counts[k].positive for k in keys], dtype=np.float64)
    decided = np.array([counts[k].decided for k in keys], dtype=np.float64)
    reacted = np.array([counts[k].reacted for k in keys], dtype=np.float64)
    parents = [_parent(metrics, k) for k in keys]
    parent_views = [metrics.views.get(p) if p else None for p in parents]
    acceptance_prior = np.array(
        [
            v.acceptance.smoothed if v else (0.5 if p is None else _ratio(positive, decided))
            for p, v in zip(parents, parent_views, strict=True)
        ]
    )
    usefulness_prior = np.array(
        [
            v.usefulness.smoothed if v else (0.5 if p is None else _ratio(positive, reacted))
            for p, v in zip(parents, parent_views, strict=True)
        ]
    )
    acceptance_strength = estimate_prior_strength(positive, decided)
    usefulness_strength = estimate_prior_strength(positive, reacted)
    if all(p is None for p in parents):
        # The root has no parent: a weak prior toward 1/2 keeps a handful of reactions from
        # making every rate below it look certain (one positive would otherwise read 100%).
        acceptance_strength = usefulness_strength = ROOT_PRIOR_STRENGTH
    acceptance = summarize_rates(
        positive, decided, parent_rate=np.clip(acceptance_prior, 0, 1), strength=acceptance_strength
    )
    usefulness = summarize_rates(
        positive, reacted, parent_rate=np.clip(usefulness_prior, 0, 1), strength=usefulness_strength
    )
    for i, key in enumerate(keys):
        metrics.views[key] = MetricView(
            scope=key[0],
            dimension=key[1],
            key=key[2],
            counts=counts[key],
            acceptance=_view(acceptance, i),
            usefulness=_view(usefulness, i),
            usefulness_prior=float(usefulness_prior[i]),
            usefulness_strength=usefulness_strength,
        )


def _ratio(successes: npt.NDArray[np.float64], trials: npt.NDArray[np.float64]) -> float:
    total = float(trials.sum())
    return float(successes.sum()) / total if total else 0.5


def _view(summary: RateSummary, i: int) -> RateView:
    return RateView(
        successes=int(summary.successes[i]),
        trials=int(summary.trials[i]),
        value=float(summary.value[i]),
        lower=float(summary.lower[i]),
        upper=float(summary.upper[i]),
        smoothed=float(summary.smoothed[i]),
    )
