"""The learned state the ranker and the metric reads use, built from counts, curves and thresholds.

Pure: the service loads rows and hands them in. Rates are smoothed along two hierarchies —
rule → category → everything, and repository → team → global — by Beta-binomial shrinkage with
a prior strength estimated from sibling groups (empirical Bayes).

Two rates per group:
* acceptance = positive / (positive + negative), reported to people;
* usefulness = positive / (positive + negative + dismissed) = 1 - effective false-positive rate,
  what calibration predicts and what the ranker and thresholds use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from services.learning.domain.calibration import IDENTITY_CURVE, CalibrationCurve
from services.learning.domain.rates import (
    RateSummary,
    estimate_prior_strength,
    summarize_rates,
    wilson_interval,
)
from services.learning.domain.scopes import GLOBAL_SCOPE, Dimension, Scope, ScopeType, scope_name


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


@dataclass(frozen=True)
class ThresholdEntry:
    threshold: float | None
    source: str
    target: float
    not_useful_upper: float
    sample_size: int
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ModelParameters:
    noisy_rule_min_samples: int = 30
    noisy_rule_max_usefulness: float = 0.3
    """A rule whose usefulness is confidently (Wilson upper bound) below this is noisy."""


MetricKey = tuple[Scope, int, str]


@dataclass
class LearnedModel:
    watermark: int
    built_at: datetime
    metrics: dict[MetricKey, MetricView] = field(default_factory=dict)
    rule_category: dict[str, str] = field(default_factory=dict)
    team_of_repository: dict[int, int] = field(default_factory=dict)
    curves: dict[tuple[Scope, str], CalibrationCurve] = field(default_factory=dict)
    thresholds: dict[tuple[Scope, str], ThresholdEntry] = field(default_factory=dict)
    noisy_rules: frozenset[str] = frozenset()
    last_tune: datetime | None = None

    @property
    def version(self) -> str:
        tuned = int(self.last_tune.timestamp()) if self.last_tune else 0
        return f"wm{self.watermark}-tune{tuned}"

    # ------------------------------------------------------------------------ lookups

    def scopes_of(self, repository_id: int | None) -> list[Scope]:
        """Most specific first: the repository, its team, global."""
        if repository_id is None:
            return [GLOBAL_SCOPE]
        chain: list[Scope] = [(ScopeType.REPOSITORY, repository_id)]
        team = self.team_of_repository.get(repository_id)
        if team is not None:
            chain.append((ScopeType.TEAM, team))
        chain.append(GLOBAL_SCOPE)
        return chain

    def curve_for(self, category: str, chain: Sequence[Scope]) -> tuple[CalibrationCurve, str]:
        for scope in chain:
            curve = self.curves.get((scope, category))
            if curve is not None:
                return curve, f"{curve.method}:{scope_name(scope[0])}"
        return IDENTITY_CURVE, "identity"

    def threshold_for(self, category: str, chain: Sequence[Scope]) -> tuple[float, str]:
        """The raw-confidence threshold of a category (NaN: none), and where it comes from."""
        for scope in chain:
            entry = self.thresholds.get((scope, category))
            if entry is not None:
                value = float("nan") if entry.threshold is None else entry.threshold
                return value, f"{entry.source}@{scope_name(scope[0])}"
        return float("nan"), "none"

    def usefulness(self, dimension: int, key: str, chain: Sequence[Scope]) -> tuple[float, float]:
        """Beta posterior (alpha, beta) of a group's usefulness, at the most specific scope
        that has counts; the prior is the parent's smoothed rate."""
        for scope in chain:
            view = self.metrics.get((scope, dimension, key))
            if view is not None and view.usefulness.trials > 0:
                u, m, p = view.usefulness, view.usefulness_strength, view.usefulness_prior
                alpha = u.successes + m * p
                beta = (u.trials - u.successes) + m * (1.0 - p)
                return max(alpha, 1e-3), max(beta, 1e-3)
        global_all = self.metrics.get((GLOBAL_SCOPE, Dimension.ALL, "*"))
        mean = global_all.usefulness.smoothed if global_all else 0.5
        return 10.0 * mean + 1e-3, 10.0 * (1.0 - mean) + 1e-3


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


def build_model(
    *,
    watermark: int,
    built_at: datetime,
    rows: Iterable[MetricInput],
    rule_category: Mapping[str, str],
    team_of_repository: Mapping[int, int],
    curves: Mapping[tuple[Scope, str], CalibrationCurve] | None = None,
    thresholds: Mapping[tuple[Scope, str], ThresholdEntry] | None = None,
    last_tune: datetime | None = None,
    parameters: ModelParameters = ModelParameters(),
) -> LearnedModel:
    model = LearnedModel(
        watermark=watermark,
        built_at=built_at,
        rule_category=dict(rule_category),
        team_of_repository=dict(team_of_repository),
        curves=dict(curves or {}),
        thresholds=dict(thresholds or {}),
        last_tune=last_tune,
    )
    counts: dict[MetricKey, Counts] = {
        ((r.scope_type, r.scope_id), r.dimension, r.key): Counts(
            r.shown, r.positive, r.negative, r.dismissed
        )
        for r in rows
    }
    # Parents come before children: global before teams before repositories; within a scope,
    # everything before categories and severities before rules.
    order = sorted(
        counts,
        key=lambda k: (
            k[0][0],
            0 if k[1] == Dimension.ALL else (2 if k[1] == Dimension.RULE else 1),
        ),
    )
    levels: dict[tuple[int, int], list[MetricKey]] = defaultdict(list)
    for key in order:
        levels[(key[0][0], key[1])].append(key)
    level_order = sorted(
        levels,
        key=lambda lv: (
            lv[0],
            0 if lv[1] == Dimension.ALL else (2 if lv[1] == Dimension.RULE else 1),
        ),
    )
    for level in level_order:
        keys = levels[level]
        _smooth_level(model, counts, keys, level)
    model.noisy_rules = _noisy_rules(model, parameters)
    return model


ROOT_PRIOR_STRENGTH = 2.0


def _dimension_rank(dimension: int) -> int:
    """Parents first: everything, then categories and severities, then rules."""
    return 0 if dimension == Dimension.ALL else (2 if dimension == Dimension.RULE else 1)


def _parent(model: LearnedModel, key: MetricKey) -> MetricKey | None:
    (scope_type, scope_id), dimension, name = key
    if scope_type == ScopeType.REPOSITORY:
        team = model.team_of_repository.get(scope_id)
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
        category = model.rule_category.get(name)
        return (
            (GLOBAL_SCOPE, Dimension.CATEGORY, category)
            if category
            else (GLOBAL_SCOPE, Dimension.ALL, "*")
        )
    return (GLOBAL_SCOPE, Dimension.ALL, "*")


def _smooth_level(
    model: LearnedModel,
    counts: Mapping[MetricKey, Counts],
    keys: Sequence[MetricKey],
    level: tuple[int, int],
) -> None:
    """Smooths one level (a scope type × dimension) toward its already smoothed parents."""
    positive = np.array([counts[k].positive for k in keys], dtype=np.float64)
    decided = np.array([counts[k].decided for k in keys], dtype=np.float64)
    reacted = np.array([counts[k].reacted for k in keys], dtype=np.float64)
    parents = [_parent(model, k) for k in keys]
    parent_views = [model.metrics.get(p) if p else None for p in parents]
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
        model.metrics[key] = MetricView(
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


def _noisy_rules(model: LearnedModel, parameters: ModelParameters) -> frozenset[str]:
    rules = [
        v
        for (scope, dim, _), v in model.metrics.items()
        if scope == GLOBAL_SCOPE and dim == Dimension.RULE
    ]
    if not rules:
        return frozenset()
    successes = np.array([v.usefulness.successes for v in rules], dtype=np.float64)
    trials = np.array([v.usefulness.trials for v in rules], dtype=np.float64)
    _, upper = wilson_interval(successes, trials)
    noisy = (trials >= parameters.noisy_rule_min_samples) & (
        upper < parameters.noisy_rule_max_usefulness
    )
    return frozenset(v.key for v, flag in zip(rules, noisy, strict=True) if flag)
