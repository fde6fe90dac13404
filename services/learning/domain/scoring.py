"""How good a probability or an ordering is: AUC, log loss, calibration error, precision@k."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


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


def auc_score(scores: npt.ArrayLike, outcomes: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(outcomes).astype(bool).ravel()
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks: the Mann-Whitney U statistic handles ties as halves
    u = float(ranks[y].sum()) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def log_loss(probabilities: npt.ArrayLike, outcomes: npt.ArrayLike, eps: float = 1e-12) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1.0 - eps)
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    if p.size == 0:
        return math.nan
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def precision_at_k(
    scores: npt.ArrayLike, outcomes: npt.ArrayLike, groups: npt.ArrayLike, *, k: int
) -> float:
    """Mean over groups (reviews) of the share of acted-on findings among each group's k best
    (or all of a group's findings, when it has fewer). Ties keep the input order."""
    if k < 1:
        raise ValueError("k must be at least 1")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if s.size == 0:
        return math.nan
    # Sort by group, then by score descending (stable: input order breaks ties).
    order = np.lexsort((np.arange(s.size), -s, g))
    sorted_groups = g[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    position = np.arange(s.size) - np.repeat(starts, np.diff(np.r_[starts, s.size]))
    top = position < k
    hits = np.bincount(
        np.searchsorted(starts, np.arange(s.size), side="right")[top] - 1,
        weights=y[order][top],
        minlength=starts.size,
    )
    taken = np.bincount(
        np.searchsorted(starts, np.arange(s.size), side="right")[top] - 1, minlength=starts.size
    )
    return float(np.mean(hits / taken))
