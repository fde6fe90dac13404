"""Calibration curves: map a checker's raw confidence (0..1) to P(developer finds it useful).

Every curve, whatever fitted it, is stored as piecewise-linear knots spanning [0, 1], so
prediction is one ``np.interp`` and curves round-trip through JSON unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

# scikit-learn and SciPy are imported inside the fitting functions: they cost a second and
# ~90 MB to import, and a serving process only ever predicts (numpy interpolation).

FloatArray = npt.NDArray[np.float64]

ISOTONIC: Final = "isotonic"
SIGMOID: Final = "sigmoid"
PARENT: Final = "parent"
IDENTITY: Final = "identity"
METHODS: Final = frozenset({ISOTONIC, SIGMOID, PARENT, IDENTITY})

SIGMOID_GRID_POINTS: Final = 101
# Keeps logit finite for confidences of exactly 0 or 1.
_LOGIT_EPSILON: Final = 1e-6


@dataclass(frozen=True)
class CalibrationCurve:
    """A monotone piecewise-linear calibration map with how it was obtained.

    ``samples`` is the number of outcomes in the scope the curve was fitted for (for a
    "parent" curve: this scope's count, not the parent's). ``ece`` and ``raw_ece`` are the
    expected calibration errors on that scope's data with and without the curve.
    """

    method: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    samples: int
    ece: float
    raw_ece: float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}")
        xs = np.asarray(self.xs, dtype=np.float64)
        ys = np.asarray(self.ys, dtype=np.float64)
        if xs.ndim != 1 or xs.shape != ys.shape or xs.size < 2:
            raise ValueError("xs and ys must be equally long sequences of at least 2 knots")
        if xs[0] != 0.0 or xs[-1] != 1.0 or np.any(np.diff(xs) <= 0.0):
            raise ValueError("xs must increase strictly from 0 to 1")
        if not np.all((ys >= 0.0) & (ys <= 1.0)) or np.any(np.diff(ys) < 0.0):
            raise ValueError("ys must be non-decreasing within [0, 1]")
        if self.samples < 0:
            raise ValueError("samples must be non-negative")

    def predict(self, confidence: npt.ArrayLike) -> FloatArray:
        """Calibrated probability for each raw confidence (inputs are clipped to [0, 1])."""
        raw = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
        return np.clip(np.interp(raw, self.xs, self.ys), 0.0, 1.0)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe representation (plain lists, ints and floats)."""
        return {
            "method": self.method,
            "xs": [float(x) for x in self.xs],
            "ys": [float(y) for y in self.ys],
            "samples": int(self.samples),
            "ece": float(self.ece),
            "raw_ece": float(self.raw_ece),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CalibrationCurve:
        """Inverse of ``to_dict``; raises ValueError on malformed data."""
        method = data.get("method")
        if not isinstance(method, str):
            raise ValueError("calibration curve needs a string 'method'")
        samples = data.get("samples")
        if not isinstance(samples, int) or isinstance(samples, bool):
            raise ValueError("calibration curve needs an integer 'samples'")
        return cls(
            method=method,
            xs=_float_tuple(data.get("xs"), "xs"),
            ys=_float_tuple(data.get("ys"), "ys"),
            samples=samples,
            ece=_float(data.get("ece"), "ece"),
            raw_ece=_float(data.get("raw_ece"), "raw_ece"),
        )


def _float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"calibration curve field {name!r} must be a finite number")
    return float(value)


def _float_tuple(value: object, name: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"calibration curve field {name!r} must be a list of numbers")
    return tuple(_float(item, name) for item in value)


IDENTITY_CURVE: Final = CalibrationCurve(
    method=IDENTITY, xs=(0.0, 1.0), ys=(0.0, 1.0), samples=0, ece=0.0, raw_ece=0.0
)


def expected_calibration_error(
    probabilities: npt.ArrayLike, outcomes: npt.ArrayLike, *, bins: int = 10
) -> float:
    """Expected calibration error over equal-width bins, weighted by bin counts.

    A probability of exactly 1.0 falls in the last bin. Empty input gives 0.0.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError("probabilities and outcomes must have the same length")
    if p.size == 0:
        return 0.0
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=p, minlength=bins)
    observed = np.bincount(index, weights=y, minlength=bins)
    # |sum p - sum y| per bin equals count * |mean p - mean y|; empty bins contribute 0.
    return float(np.abs(predicted - observed).sum() / counts.sum())


def fit_calibration(
    confidence: npt.ArrayLike,
    positive: npt.ArrayLike,
    *,
    min_isotonic_samples: int = 200,
    min_sigmoid_samples: int = 30,
    parent: CalibrationCurve | None = None,
) -> CalibrationCurve:
    """Fit the richest calibration the sample size supports.

    Isotonic regression from ``min_isotonic_samples`` outcomes, a Platt sigmoid on the logit
    of confidence from ``min_sigmoid_samples``, otherwise the parent's knots relabelled
    "parent", or the identity map when there is no parent. The identity fallback carries
    this scope's sample count and ECE, so it equals ``IDENTITY_CURVE`` only for empty input.
    """
    x = np.asarray(confidence, dtype=np.float64).ravel()
    y = _outcomes(positive, x.size)
    if not np.all((x >= 0.0) & (x <= 1.0)):
        raise ValueError("confidence must lie in [0, 1]")
    samples = int(x.size)

    if samples > 0 and samples >= min_isotonic_samples:
        method, xs, ys = ISOTONIC, *_isotonic_knots(x, y)
    elif samples > 0 and samples >= min_sigmoid_samples:
        method, xs, ys = SIGMOID, *_sigmoid_knots(x, y)
    elif parent is not None:
        method, xs, ys = PARENT, np.asarray(parent.xs), np.asarray(parent.ys)
    else:
        method, xs, ys = IDENTITY, np.asarray(IDENTITY_CURVE.xs), np.asarray(IDENTITY_CURVE.ys)

    # Float noise must not break the monotonicity the dataclass enforces.
    ys = np.maximum.accumulate(np.clip(ys, 0.0, 1.0))
    curve = CalibrationCurve(
        method=method,
        xs=tuple(float(v) for v in xs),
        ys=tuple(float(v) for v in ys),
        samples=samples,
        ece=0.0,
        raw_ece=0.0,
    )
    fitted = {ISOTONIC: _isotonic_knots, SIGMOID: _sigmoid_knots}.get(method)
    if fitted is not None and samples >= 4 * CV_FOLDS:
        ece = _out_of_fold_ece(x, y, fitted)
    else:
        ece = expected_calibration_error(curve.predict(x), y)
    return replace(curve, ece=ece, raw_ece=expected_calibration_error(x, y))


CV_FOLDS = 5


def _out_of_fold_ece(
    x: FloatArray,
    y: FloatArray,
    fit: Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]],
) -> float:
    """ECE of predictions each made by a curve that did not see the point (k-fold).

    In-sample ECE flatters a fitted curve (isotonic regression is perfectly calibrated on its
    own data), so the reported error is measured out of fold.
    """
    folds = np.random.default_rng(0).permutation(x.size) % CV_FOLDS
    predicted = np.empty_like(x)
    for fold in range(CV_FOLDS):
        held = folds == fold
        xs, ys = fit(x[~held], y[~held])
        predicted[held] = np.interp(x[held], xs, np.maximum.accumulate(np.clip(ys, 0.0, 1.0)))
    return expected_calibration_error(predicted, y)


def _outcomes(positive: npt.ArrayLike, size: int) -> FloatArray:
    raw = np.asarray(positive).ravel()
    if raw.shape != (size,):
        raise ValueError("confidence and positive must have the same length")
    if raw.dtype != np.bool_ and not np.all((raw == 0) | (raw == 1)):
        raise ValueError("positive must be boolean or 0/1")
    return raw.astype(np.float64)


def _isotonic_knots(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(x, y)
    xs = np.asarray(model.X_thresholds_, dtype=np.float64)
    ys = np.asarray(model.y_thresholds_, dtype=np.float64)
    # out_of_bounds="clip" holds the end values flat; make that explicit so knots span [0, 1].
    if xs[0] > 0.0:
        xs, ys = np.concatenate(([0.0], xs)), np.concatenate((ys[:1], ys))
    if xs[-1] < 1.0:
        xs, ys = np.concatenate((xs, [1.0])), np.concatenate((ys, ys[-1:]))
    return xs, ys


def _sigmoid_knots(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Platt scaling on logit(confidence), tabulated on an even grid.

    Uses Platt's smoothed targets (N+ + 1)/(N+ + 2) and 1/(N- + 2), fitted as two weighted
    copies of each sample. That keeps the maximum-likelihood fit finite for separable or
    single-class data, so no regularisation is needed and sklearn never fails or warns.
    """
    n_pos = float(y.sum())
    n_neg = float(y.size) - n_pos
    target = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    from scipy.special import expit, logit
    from sklearn.linear_model import LogisticRegression

    features = logit(np.clip(x, _LOGIT_EPSILON, 1.0 - _LOGIT_EPSILON))
    grid = np.linspace(0.0, 1.0, SIGMOID_GRID_POINTS)

    if np.ptp(features) > 0.0:
        model = LogisticRegression(C=np.inf, max_iter=1000)
        model.fit(
            np.concatenate((features, features)).reshape(-1, 1),
            np.concatenate((np.ones_like(y), np.zeros_like(y))),
            sample_weight=np.concatenate((target, 1.0 - target)),
        )
        slope = float(model.coef_[0, 0])
        intercept = float(model.intercept_[0])
        if slope > 0.0:
            grid_features = logit(np.clip(grid, _LOGIT_EPSILON, 1.0 - _LOGIT_EPSILON))
            return grid, np.asarray(expit(slope * grid_features + intercept), dtype=np.float64)
    # Constant confidence, or confidence that anti-correlates with outcome: the best
    # non-decreasing logistic fit is flat at the (smoothed) base rate.
    return grid, np.full_like(grid, float(target.mean()))
