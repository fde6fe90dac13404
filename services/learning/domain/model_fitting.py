"""Fitting the log-odds model: L2 logistic regression over one-hot levels, chosen out of time.

L2-regularised logistic regression is hierarchical shrinkage: with prior variance σ² on every
coefficient, a level with little evidence stays near 0, so its parent level (the rule
everywhere, the category) speaks for it, and a level with much evidence moves as far as its
data says. scikit-learn fits it (Newton-CG); nothing here is a hand-written optimiser.

How strongly to shrink (σ²) and how fast old outcomes fade (an exponential half-life: review
habits drift, recent outcomes should count more) are chosen by **out-of-time** evaluation: fit
on the older part of the log, score the most recent part, keep the pair with the best log loss.
The same held-out part fits the calibration (Platt scaling of the logit) and measures its ECE.
The model that serves is then refitted on the whole log with the chosen pair.

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
    prior_variances: tuple[float, ...] = (0.03, 0.1, 0.4, 1.6)
    """Candidate σ² of every coefficient (the shrinkage); chosen out of time."""
    half_lives_days: tuple[float | None, ...] = (None, 180.0, 60.0, 20.0)
    """Candidate half-lives of an outcome's weight (None: no decay); chosen out of time."""
    validation_share: float = 0.2
    """The most recent share of the log held out to choose, calibrate and validate."""
    min_validation_samples: int = 200
    """Below this many held-out outcomes nothing is chosen: the defaults are used uncalibrated."""
    confidence_bins: int = 5
    default_prior_variance: float = 0.4
    max_iterations: int = 500

    def __post_init__(self) -> None:
        if not self.prior_variances or any(v <= 0 for v in self.prior_variances):
            raise ValueError("prior_variances must be positive")
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
        features.severity,
        bins.astype(np.int64),
        features.path_kinds,
    ]
    stacked = np.stack(columns, axis=1)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return _Aggregate(features.take(first), inverse.astype(np.int64).reshape(-1))


def _codes(values: npt.NDArray[np.object_] | IntArray) -> IntArray:
    if values.dtype != object:
        return np.asarray(values, dtype=np.int64)
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
    prior_variance: float,
    max_iterations: int,
) -> _Fit:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    x = design.matrix
    has_pos = positive > 0
    has_neg = negative > 0
    stacked = sparse.vstack([x[has_pos], x[has_neg]]).tocsr()  # type: ignore[index]
    y = np.concatenate([np.ones(int(has_pos.sum())), np.zeros(int(has_neg.sum()))])
    weights = np.concatenate([positive[has_pos], negative[has_neg]])
    # Newton-CG: a handful of Hessian-vector iterations on the sparse design, where L-BFGS
    # needs hundreds of steps for the same optimum.
    model = LogisticRegression(
        C=prior_variance, solver="newton-cg", max_iter=max_iterations, tol=1e-6
    )
    # sklearn minimises C · Σ w·loss + ½‖β‖²: with C = σ² that is the posterior mode under a
    # N(0, σ²) prior, and a decayed outcome (w < 1) counts as a fraction of an observation.
    model.fit(stacked, y, sample_weight=weights)
    return _Fit(float(model.intercept_[0]), np.asarray(model.coef_[0], dtype=np.float64))


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
    prior_variance: float,
    version: str,
    fitted_at: datetime,
    half_life_days: float | None,
) -> LogOddsModel:
    x = design.matrix
    eta = fit.intercept + x @ fit.coefficients  # type: ignore[operator]
    p = sigmoid(np.asarray(eta, dtype=np.float64))
    information = (positive + negative) * p * (1.0 - p)
    per_column = np.asarray(x.T @ information, dtype=np.float64)  # type: ignore[attr-defined]
    variance = 1.0 / (1.0 / prior_variance + per_column)
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


def _fit_log(
    log: OutcomeLog,
    *,
    prior_variance: float,
    half_life_days: float | None,
    parameters: FitParameters,
    version: str,
    fitted_at: datetime,
) -> LogOddsModel:
    """One fit of the uncalibrated model on the whole of ``log``."""
    edges = confidence_edges(log.features.confidence, bins=parameters.confidence_bins)
    aggregate = _aggregate(log.features, edges)
    size = aggregate.features.size
    useful = log.useful.astype(np.float64)
    weights = _weights(log.seen_at, now=float(log.seen_at.max()), half_life_days=half_life_days)
    positive = _sums(aggregate.inverse, weights * useful, size)
    negative = _sums(aggregate.inverse, weights * (1.0 - useful), size)
    acted_on = _sums(aggregate.inverse, useful, size)
    outcomes = _sums(aggregate.inverse, np.ones_like(useful), size)
    design = _design(aggregate.features, edges)
    if acted_on.sum() in (0.0, outcomes.sum()):
        # One class only: there is nothing to discriminate; the smoothed base rate is the model.
        rate = (acted_on.sum() + 0.5) / (outcomes.sum() + 1.0)
        fit = _Fit(float(logit(np.asarray(rate))), np.zeros(design.width))
    else:
        fit = _fit(
            design,
            positive,
            negative,
            prior_variance=prior_variance,
            max_iterations=parameters.max_iterations,
        )
    return _model_from_fit(
        fit=fit,
        design=design,
        combinations=aggregate.features,
        positive=positive,
        negative=negative,
        acted_on=acted_on,
        outcomes=outcomes,
        edges=edges,
        prior_variance=prior_variance,
        version=version,
        fitted_at=fitted_at,
        half_life_days=half_life_days,
    )


def _sums(groups: IntArray, values: FloatArray, size: int) -> FloatArray:
    sums: FloatArray = np.bincount(groups, weights=values, minlength=size).astype(np.float64)
    return sums


def _raw_logit(model: LogOddsModel, features: FindingFeatures) -> FloatArray:
    """The uncalibrated logit of each finding, predicted once per distinct combination."""
    aggregate = _aggregate(features, model.confidence_edges)
    prediction = model.predict(aggregate.features)
    slope = model.calibration.slope
    # predict() applies the calibration; undo it to get the model's own logit.
    raw = (prediction.logit - model.calibration.offset) / slope if slope else prediction.logit
    return np.asarray(raw[aggregate.inverse], dtype=np.float64)


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
    chosen: tuple[float, float | None] = (parameters.default_prior_variance, None)
    calibration = Calibration()
    validation: Validation | None = None
    if recent.size >= parameters.min_validation_samples and older.size > 0:
        scored: dict[tuple[float, float | None], tuple[float, FloatArray]] = {}

        def score(prior_variance: float, half_life: float | None) -> None:
            if (prior_variance, half_life) in scored:
                return
            cancel.check()
            candidate = _fit_log(
                older,
                prior_variance=prior_variance,
                half_life_days=half_life,
                parameters=parameters,
                version=version,
                fitted_at=fitted_at,
            )
            eta = _raw_logit(candidate, recent.features)
            scored[(prior_variance, half_life)] = (log_loss(sigmoid(eta), recent.useful), eta)

        def best(pairs: list[tuple[float, float | None]]) -> tuple[float, float | None]:
            # Best held-out log loss; near-ties go to stronger shrinkage and slower decay.
            return min(pairs, key=lambda p: (round(scored[p][0], 5), p[0], -(p[1] or math.inf)))

        # Two passes instead of the full grid: the decay at the default shrinkage, then the
        # shrinkage at that decay (each fit is one of the few seconds a tune may take).
        default = parameters.default_prior_variance
        for half_life in parameters.half_lives_days:
            score(default, half_life)
        half_life = best([(default, h) for h in parameters.half_lives_days])[1]
        for prior_variance in parameters.prior_variances:
            score(prior_variance, half_life)
        chosen = best([(v, half_life) for v in (default, *parameters.prior_variances)])
        eta = scored[chosen][1]
        calibration = calibrate(eta, recent.useful)
        calibrated = sigmoid(calibration.slope * eta + calibration.offset)
        validation = Validation(
            samples=recent.size,
            auc=auc_score(eta, recent.useful),
            log_loss=log_loss(calibrated, recent.useful),
            ece=calibration.ece,
            half_life_days=chosen[1],
            prior_variance=chosen[0],
        )
    cancel.check()
    final = _fit_log(
        log,
        prior_variance=chosen[0],
        half_life_days=chosen[1],
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
