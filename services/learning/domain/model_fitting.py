"""Fitting the log-odds model: L2 logistic regression over one-hot levels, chosen out of time.

L2-regularised logistic regression is hierarchical shrinkage: with prior variance σ² on the
coefficients of a term, a level with little evidence stays near 0, so its parent level (the rule
everywhere, the category) speaks for it, and a level with much evidence moves as far as its
data says. scikit-learn fits it (liblinear); nothing here is a hand-written optimiser.

Each term has its own σ², estimated from its levels (empirical Bayes, a few EM steps around
the fit): rules that differ a lot get a wide prior, repository adjustments that barely matter a
narrow one — and a level never seen is as uncertain as its term's levels spread. The column of
a term is scaled by its σ, which is how a per-term prior enters sklearn's single ``C``.

How fast old outcomes fade (an exponential half-life: review habits drift, recent outcomes
should count more) is chosen by **out-of-time** evaluation: fit on the older part of the log,
score the most recent part, keep a decay only if it is clearly better than none. The same
held-out part fits the calibration (Platt scaling of the logit) and measures its ECE. The model
that serves is then refitted on the whole log with the chosen decay.

Outcomes are aggregated first: findings with the same levels (team, repository, rule,
category, severity, confidence bin, path kinds) are one row with summed weights, which is
exactly the same likelihood and makes a fit over a million outcomes a fit over the few
thousand distinct combinations they have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from services.learning.domain.cancellation import NEVER_CANCELLED, CancelToken
from services.learning.domain.features import (
    PATH_KINDS,
    BoolArray,
    FindingFeatures,
    FloatArray,
    IntArray,
    OutcomeLog,
    Term,
    confidence_edges,
)
from services.learning.domain.model import (
    Calibration,
    LogOddsModel,
    TermTable,
    Validation,
    logit,
    sigmoid,
    term_keys,
    uninformed_model,
)
from services.learning.domain.scoring import auc_score, expected_calibration_error, log_loss

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class FitParameters:
    half_lives_days: tuple[float | None, ...] = (None, 180.0, 60.0, 20.0)
    """Candidate half-lives of an outcome's weight (None: no decay); chosen out of time."""
    validation_share: float = 0.2
    """The most recent share of the log held out to choose, calibrate and validate."""
    min_validation_samples: int = 200
    """Below this many held-out outcomes nothing is chosen: the defaults are used uncalibrated."""
    confidence_bins: int = 5
    default_prior_variance: float = 0.4
    """σ² the estimation starts from, and keeps for terms with too few levels to estimate it."""
    variance_steps: int = 2
    """EM steps of the per-term σ² estimation."""
    min_levels_for_variance: int = 2
    max_iterations: int = 500

    def __post_init__(self) -> None:
        if not self.default_prior_variance > 0:
            raise ValueError("default_prior_variance must be positive")
        if not self.half_lives_days or any(h is not None and h <= 0 for h in self.half_lives_days):
            raise ValueError("half_lives_days must be positive (or None)")
        if not 0.0 < self.validation_share < 1.0:
            raise ValueError("validation_share must lie in (0, 1)")


@dataclass(frozen=True, eq=False)
class _Aggregate:
    """Distinct combinations of levels with their (weighted) counts."""

    features: FindingFeatures
    """One representative finding per combination."""
    inverse: IntArray
    """Which combination each outcome belongs to."""


def _aggregate(features: FindingFeatures, edges: FloatArray) -> _Aggregate:
    bins = np.searchsorted(edges, features.confidence, side="right")
    columns = [
        _codes(features.team_id),
        _codes(features.repository_id),
        _codes(features.rule_id),
        _codes(features.category),
        np.asarray(features.severity, dtype=np.int64),
        bins.astype(np.int64),
        np.asarray(features.path_kinds, dtype=np.int64),
    ]
    # One int64 key per outcome (mixed radix) when the combinations fit, which makes the
    # grouping a 1-D sort; otherwise rows of the stacked columns are compared.
    radices = [int(c.max()) + 1 if c.size else 1 for c in columns]
    if c_size := features.size:
        capacity = 1
        for radix in radices:
            capacity *= radix
        if capacity < 2**62:
            key = np.zeros(c_size, dtype=np.int64)
            for column, radix in zip(columns, radices, strict=True):
                key = key * radix + column
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            return _Aggregate(features.take(first), inverse.astype(np.int64).reshape(-1))
    stacked = np.stack(columns, axis=1)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return _Aggregate(features.take(first), inverse.astype(np.int64).reshape(-1))


def _codes(values: npt.NDArray[np.object_] | IntArray) -> IntArray:
    if values.dtype != object:
        _, inverse = np.unique(values, return_inverse=True)
        return inverse.astype(np.int64).reshape(-1)
    ids: dict[object, int] = {}
    return np.fromiter(
        (ids.setdefault(v, len(ids)) for v in values.tolist()), dtype=np.int64, count=len(values)
    )


@dataclass(frozen=True, eq=False)
class _Design:
    """The one-hot design matrix of the combinations and each column's term and key."""

    matrix: object  # scipy.sparse.csr_matrix (SciPy is imported lazily)
    tables: dict[Term, tuple[list[str], int]]
    """Per term: its keys and the first column of its block."""
    width: int


def _design(combinations: FindingFeatures, edges: FloatArray) -> _Design:
    from scipy import sparse

    n = combinations.size
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    tables: dict[Term, tuple[list[str], int]] = {}
    offset = 0
    everyone = np.arange(n, dtype=np.int64)
    for term, (keys, inverse) in term_keys(combinations, edges).items():
        tables[term] = (keys, offset)
        rows.append(everyone)
        cols.append(offset + inverse)
        offset += len(keys)
    kinds = [kind.value for kind in PATH_KINDS]
    present = [i for i in range(len(kinds)) if np.any((combinations.path_kinds >> i) & 1)]
    tables[Term.PATH] = ([kinds[i] for i in present], offset)
    for position, i in enumerate(present):
        has = np.flatnonzero((combinations.path_kinds >> i) & 1).astype(np.int64)
        rows.append(has)
        cols.append(np.full(has.size, offset + position, dtype=np.int64))
    offset += len(present)
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    matrix = sparse.csr_matrix((np.ones(row.size), (row, col)), shape=(n, offset))
    return _Design(matrix, tables, offset)


@dataclass(frozen=True)
class _Fit:
    intercept: float
    coefficients: FloatArray


def _fit(
    design: _Design,
    positive: FloatArray,
    negative: FloatArray,
    *,
    column_variance: FloatArray,
    max_iterations: int,
) -> _Fit:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    scale = np.sqrt(column_variance)
    x = design.matrix @ sparse.diags(scale)
    has_pos = positive > 0
    has_neg = negative > 0
    stacked = sparse.vstack([x[has_pos], x[has_neg]]).tocsr()
    y = np.concatenate([np.ones(int(has_pos.sum())), np.zeros(int(has_neg.sum()))])
    weights = np.concatenate([positive[has_pos], negative[has_neg]])
    # liblinear's trust-region Newton method solves this sparse problem in a few dozen steps,
    # several times faster than Newton-CG or L-BFGS here. It penalises the intercept too; as
    # the intercept's column (intercept_scaling) is 100, its penalty is 1/10,000 of a term's,
    # so the intercept is effectively free, as it should be.
    model = LogisticRegression(
        C=1.0, solver="liblinear", intercept_scaling=100.0, max_iter=max_iterations, tol=1e-6
    )
    # sklearn minimises C · Σ w·loss + ½‖γ‖²; with columns scaled by σ and β = σ·γ that is the
    # posterior mode under β ~ N(0, σ²), and a decayed outcome (w < 1) counts as a fraction.
    model.fit(stacked, y, sample_weight=weights)
    coefficients = np.asarray(model.coef_[0], dtype=np.float64) * scale
    return _Fit(float(model.intercept_[0]), coefficients)


def _posterior_variance(
    fit: _Fit,
    design: _Design,
    positive: FloatArray,
    negative: FloatArray,
    column_variance: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Per-column Laplace variance 1 / (1/σ² + Fisher information), and each combination's
    information (its weight × p(1-p))."""
    x = design.matrix
    eta = fit.intercept + x @ fit.coefficients  # type: ignore[operator]
    p = sigmoid(np.asarray(eta, dtype=np.float64))
    information = (positive + negative) * p * (1.0 - p)
    per_column = np.asarray(x.T @ information, dtype=np.float64)  # type: ignore[attr-defined]
    variance: FloatArray = 1.0 / (1.0 / column_variance + per_column)
    return variance, information


def _weights(seen_at: FloatArray, *, now: float, half_life_days: float | None) -> FloatArray:
    if half_life_days is None:
        return np.ones_like(seen_at)
    age_days = np.maximum(now - seen_at, 0.0) / DAY_SECONDS
    weights: FloatArray = np.exp2(-age_days / half_life_days)
    return weights


def _model_from_fit(
    *,
    fit: _Fit,
    design: _Design,
    combinations: FindingFeatures,
    positive: FloatArray,
    negative: FloatArray,
    acted_on: FloatArray,
    outcomes: FloatArray,
    edges: FloatArray,
    column_variance: FloatArray,
    term_variance: dict[Term, float],
    prior_variance: float,
    version: str,
    fitted_at: datetime,
    half_life_days: float | None,
) -> LogOddsModel:
    x = design.matrix
    variance, information = _posterior_variance(fit, design, positive, negative, column_variance)
    column_acted_on = np.asarray(x.T @ acted_on, dtype=np.float64)  # type: ignore[attr-defined]
    column_outcomes = np.asarray(x.T @ outcomes, dtype=np.float64)  # type: ignore[attr-defined]
    terms: dict[Term, TermTable] = {}
    for term, (keys, start) in design.tables.items():
        stop = start + len(keys)
        terms[term] = TermTable(
            keys=tuple(keys),
            coefficient=fit.coefficients[start:stop].copy(),
            variance=variance[start:stop].copy(),
            acted_on=np.rint(column_acted_on[start:stop]).astype(np.int64),
            outcomes=np.rint(column_outcomes[start:stop]).astype(np.int64),
            prior_variance=term_variance[term],
        )
    total_information = float(information.sum())
    return LogOddsModel(
        version=version,
        fitted_at=fitted_at,
        intercept=fit.intercept,
        intercept_variance=1.0 / total_information if total_information > 0 else prior_variance,
        prior_variance=prior_variance,
        confidence_edges=edges,
        terms=terms,
        calibration=Calibration(),
        samples=int(outcomes.sum()),
        acted_on=int(acted_on.sum()),
        half_life_days=half_life_days,
    )


@dataclass(frozen=True, eq=False)
class _Prepared:
    """A log aggregated once, for every fit on it (the fits differ only in their weights)."""

    log: OutcomeLog
    edges: FloatArray
    aggregate: _Aggregate
    design: _Design
    acted_on: FloatArray
    outcomes: FloatArray


def _prepare(log: OutcomeLog, parameters: FitParameters) -> _Prepared:
    edges = confidence_edges(log.features.confidence, bins=parameters.confidence_bins)
    aggregate = _aggregate(log.features, edges)
    size = aggregate.features.size
    useful = log.useful.astype(np.float64)
    return _Prepared(
        log=log,
        edges=edges,
        aggregate=aggregate,
        design=_design(aggregate.features, edges),
        acted_on=_sums(aggregate.inverse, useful, size),
        outcomes=_sums(aggregate.inverse, np.ones_like(useful), size),
    )


def _fit_log(
    prepared: _Prepared,
    *,
    half_life_days: float | None,
    parameters: FitParameters,
    version: str,
    fitted_at: datetime,
    term_variance: dict[Term, float] | None = None,
    variance_steps: int | None = None,
) -> LogOddsModel:
    """One fit of the uncalibrated model on a prepared log, with per-term σ² estimated in
    ``variance_steps`` EM steps starting from ``term_variance`` (default: everywhere the
    default σ²)."""
    log, design, aggregate = prepared.log, prepared.design, prepared.aggregate
    size = aggregate.features.size
    useful = log.useful.astype(np.float64)
    weights = _weights(log.seen_at, now=float(log.seen_at.max()), half_life_days=half_life_days)
    positive = _sums(aggregate.inverse, weights * useful, size)
    negative = _sums(aggregate.inverse, weights * (1.0 - useful), size)
    acted_on, outcomes = prepared.acted_on, prepared.outcomes
    default = parameters.default_prior_variance
    variances = dict.fromkeys(design.tables, default)
    variances.update(term_variance or {})
    steps = parameters.variance_steps if variance_steps is None else variance_steps
    column_variance = np.full(design.width, default)
    for term, (keys, start) in design.tables.items():
        column_variance[start : start + len(keys)] = variances[term]
    if acted_on.sum() in (0.0, outcomes.sum()):
        # One class only: there is nothing to discriminate; the smoothed base rate is the model.
        rate = (acted_on.sum() + 0.5) / (outcomes.sum() + 1.0)
        fit = _Fit(float(logit(np.asarray(rate))), np.zeros(design.width))
    else:
        for step in range(steps + 1):
            fit = _fit(
                design,
                positive,
                negative,
                column_variance=column_variance,
                max_iterations=parameters.max_iterations,
            )
            if step == steps:
                break
            # EM for the variance components: σ²_term = mean over its levels of (β² + Var β).
            variance, _ = _posterior_variance(fit, design, positive, negative, column_variance)
            for term, (keys, start) in design.tables.items():
                if len(keys) < parameters.min_levels_for_variance:
                    continue
                block = slice(start, start + len(keys))
                estimate = float(np.mean(fit.coefficients[block] ** 2 + variance[block]))
                variances[term] = min(max(estimate, MIN_TERM_VARIANCE), MAX_TERM_VARIANCE)
                column_variance[block] = variances[term]
    return _model_from_fit(
        fit=fit,
        design=design,
        combinations=aggregate.features,
        positive=positive,
        negative=negative,
        acted_on=acted_on,
        outcomes=outcomes,
        edges=prepared.edges,
        column_variance=column_variance,
        term_variance=variances,
        prior_variance=default,
        version=version,
        fitted_at=fitted_at,
        half_life_days=half_life_days,
    )


MIN_TERM_VARIANCE = 0.01
MAX_TERM_VARIANCE = 9.0


def _sums(groups: IntArray, values: FloatArray, size: int) -> FloatArray:
    sums: FloatArray = np.bincount(groups, weights=values, minlength=size).astype(np.float64)
    return sums


def _raw_logit(
    model: LogOddsModel, features: FindingFeatures, aggregate: _Aggregate | None = None
) -> FloatArray:
    """The uncalibrated logit of each finding, predicted once per distinct combination
    (``aggregate``: the findings already grouped with the model's confidence bins)."""
    aggregate = aggregate or _aggregate(features, model.confidence_edges)
    prediction = model.predict(aggregate.features)
    slope = model.calibration.slope
    # predict() applies the calibration; undo it to get the model's own logit.
    raw = (prediction.logit - model.calibration.offset) / slope if slope else prediction.logit
    return np.asarray(raw[aggregate.inverse], dtype=np.float64)


def _clearly_better(challenger: FloatArray, incumbent: FloatArray) -> bool:
    """Clearly better out of time: the mean paired loss difference beats twice its standard
    error. Otherwise the incumbent (no decay, or a slower one) stays: a noisy held-out set must
    not pick a fragile setting."""
    difference = incumbent - challenger
    error = float(difference.std(ddof=1)) / math.sqrt(difference.size)
    return float(difference.mean()) > 2.0 * error


def _row_losses(eta: FloatArray, useful: BoolArray) -> FloatArray:
    p = np.clip(sigmoid(eta), 1e-12, 1.0 - 1e-12)
    losses: FloatArray = -np.where(useful, np.log(p), np.log1p(-p))
    return losses


def _mean(values: FloatArray) -> float:
    return float(values.mean())


def fit_platt(eta: FloatArray, useful: BoolArray) -> tuple[float, float]:
    """Slope and offset of ``sigmoid(slope·eta + offset)`` fitted by maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    if useful.all() or not useful.any() or np.ptp(eta) == 0.0:
        rate = (float(useful.sum()) + 0.5) / (useful.size + 1.0)
        return 0.0, float(logit(np.asarray(rate)))
    model = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    model.fit(eta.reshape(-1, 1), useful.astype(np.int64))
    slope = float(model.coef_[0, 0])
    if slope <= 0.0:
        # Out of time the ordering was no better than chance: the honest model is the base rate.
        rate = (float(useful.sum()) + 0.5) / (useful.size + 1.0)
        return 0.0, float(logit(np.asarray(rate)))
    return slope, float(model.intercept_[0])


def calibrate(eta: FloatArray, useful: BoolArray) -> Calibration:
    """Platt scaling on held-out logits, with its ECE measured cross-fitted (two halves)."""
    slope, offset = fit_platt(eta, useful)
    halves = np.arange(eta.size) % 2 == 0
    cross = np.empty_like(eta)
    for half in (halves, ~halves):
        a, b = fit_platt(eta[~half], useful[~half])
        cross[half] = sigmoid(a * eta[half] + b)
    return Calibration(
        slope=slope,
        offset=offset,
        samples=int(eta.size),
        ece=expected_calibration_error(cross, useful),
        raw_ece=expected_calibration_error(sigmoid(eta), useful),
    )


def split_out_of_time(log: OutcomeLog, share: float) -> tuple[OutcomeLog, OutcomeLog]:
    """(older, most recent ``share``) by first-seen time; ties stay on one side."""
    order = np.argsort(log.seen_at, kind="stable")
    cut_position = round(log.size * (1.0 - share))
    cut_time = log.seen_at[order[min(cut_position, log.size - 1)]]
    older = log.seen_at < cut_time
    return log.take(np.flatnonzero(older)), log.take(np.flatnonzero(~older))


def fit_model(
    log: OutcomeLog,
    parameters: FitParameters = FitParameters(),
    *,
    version: str,
    fitted_at: datetime,
    cancel: CancelToken = NEVER_CANCELLED,
) -> LogOddsModel:
    """Chooses shrinkage and decay out of time, calibrates, and refits on the whole log."""
    if log.size == 0:
        return uninformed_model(
            version=version, fitted_at=fitted_at, prior_variance=parameters.default_prior_variance
        )
    older, recent = split_out_of_time(log, parameters.validation_share)
    chosen: float | None = None
    calibration = Calibration()
    validation: Validation | None = None
    variances: dict[Term, float] | None = None
    if recent.size >= parameters.min_validation_samples and older.size > 0:
        scored: dict[float | None, tuple[FloatArray, FloatArray]] = {}
        prepared = _prepare(older, parameters)
        recent_groups = _aggregate(recent.features, prepared.edges)
        for half_life in (None, *parameters.half_lives_days):
            if half_life in scored:
                continue
            cancel.check()
            # The shrinkage is estimated once, without decay; the decay candidates reuse it.
            candidate = _fit_log(
                prepared,
                half_life_days=half_life,
                parameters=parameters,
                version=version,
                fitted_at=fitted_at,
                term_variance=variances,
                variance_steps=None if variances is None else 0,
            )
            if variances is None:
                variances = {term: table.prior_variance for term, table in candidate.terms.items()}
            eta = _raw_logit(candidate, recent.features, recent_groups)
            scored[half_life] = (_row_losses(eta, recent.useful), eta)
        for half_life in parameters.half_lives_days:
            if _clearly_better(scored[half_life][0], scored[chosen][0]):
                chosen = half_life
        eta = scored[chosen][1]
        calibration = calibrate(eta, recent.useful)
        calibrated = sigmoid(calibration.slope * eta + calibration.offset)
        validation = Validation(
            samples=recent.size,
            auc=auc_score(eta, recent.useful),
            log_loss=log_loss(calibrated, recent.useful),
            ece=calibration.ece,
            half_life_days=chosen,
            prior_variance=parameters.default_prior_variance,
        )
    cancel.check()
    final = _fit_log(
        _prepare(log, parameters),
        half_life_days=chosen,
        term_variance=variances,
        variance_steps=None if variances is None else 1,
        parameters=parameters,
        version=version,
        fitted_at=fitted_at,
    )
    return LogOddsModel(
        version=final.version,
        fitted_at=final.fitted_at,
        intercept=final.intercept,
        intercept_variance=final.intercept_variance,
        prior_variance=final.prior_variance,
        confidence_edges=final.confidence_edges,
        terms=final.terms,
        calibration=calibration,
        samples=final.samples,
        acted_on=final.acted_on,
        half_life_days=final.half_life_days,
        validation=validation,
    )
