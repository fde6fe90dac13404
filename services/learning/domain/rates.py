"""Acceptance rates with honest uncertainty: Wilson intervals and Beta-binomial shrinkage.

All functions are vectorised over groups (rules, categories, repositories...). Counts are
accepted as any non-negative numbers, so weighted feedback works as well as integer counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

Z_95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


def _counts(successes: npt.ArrayLike, trials: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return broadcast float copies of the counts, rejecting impossible values."""
    s, n = np.broadcast_arrays(
        np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(n))):
        raise ValueError("successes and trials must be finite")
    if np.any(s < 0) or np.any(s > n):
        raise ValueError("counts must satisfy 0 <= successes <= trials")
    return s.copy(), n.copy()


def _rates(value: npt.ArrayLike, name: str) -> FloatArray:
    rate = np.asarray(value, dtype=np.float64)
    if not np.all((rate >= 0.0) & (rate <= 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return rate


def _strengths(value: npt.ArrayLike) -> FloatArray:
    strength = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(strength) & (strength >= 0.0)):
        raise ValueError("strength must be finite and non-negative")
    return strength


def wilson_interval(
    successes: npt.ArrayLike, trials: npt.ArrayLike, *, z: float = Z_95
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval for a binomial proportion, element-wise.

    Groups with no trials get the uninformative interval (0, 1). Unlike the normal
    approximation, the interval stays inside [0, 1] and is not degenerate at 0/n or n/n.
    """
    if not z > 0.0:
        raise ValueError("z must be positive")
    s, n = _counts(successes, trials)
    inverse_n = 1.0 / np.where(n == 0, 1.0, n)
    p = s * inverse_n
    z2_n = (z * z) * inverse_n
    denominator = 1.0 + z2_n
    centre = (p + 0.5 * z2_n) / denominator
    # Clamp at zero: at p in {0, 1} rounding can make the radicand a hair negative.
    radicand = np.maximum((p * (1.0 - p) + 0.25 * z2_n) * inverse_n, 0.0)
    half_width = z * np.sqrt(radicand) / denominator
    # The exact bounds at 0/n and n/n are 0 and 1; pin them against rounding.
    lower = np.where(s == 0, 0.0, np.clip(centre - half_width, 0.0, 1.0))
    upper = np.where(s == n, 1.0, np.clip(centre + half_width, 0.0, 1.0))
    return lower, upper


def shrink_toward(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    parent_rate: npt.ArrayLike,
    strength: npt.ArrayLike,
) -> FloatArray:
    """Posterior mean rate under a Beta(strength*parent, strength*(1-parent)) prior.

    ``strength`` acts as a pseudo-count: a group with ``strength`` trials lands halfway
    between its own rate and the parent's. With strength 0 and no trials the parent rate
    is returned rather than 0/0.
    """
    s, n = _counts(successes, trials)
    parent = _rates(parent_rate, "parent_rate")
    k = _strengths(strength)
    denominator = n + k
    safe_denominator = np.where(denominator > 0, denominator, 1.0)
    posterior = (s + k * parent) / safe_denominator
    return np.asarray(np.where(denominator > 0, posterior, parent * np.ones_like(posterior)))


def estimate_prior_strength(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    minimum: float = 2.0,
    maximum: float = 200.0,
    default: float = 10.0,
) -> float:
    """Method-of-moments estimate of the Beta prior concentration alpha+beta over sibling groups.

    Under a Beta-binomial model with mean m and concentration k, a group's observed rate has
    variance m(1-m) * (1/n + (1 - 1/n) * rho) with rho = 1/(k+1). Averaging over groups and
    matching the sample variance of the rates gives rho, hence k. The result is clipped to
    [minimum, maximum]; ``default`` is returned when there are fewer than 3 groups with
    trials, when the pooled rate is 0 or 1, or when the spread of the rates is no larger
    than binomial noise alone would produce (the data cannot tell how strong the prior is).
    """
    if not 0.0 < minimum <= maximum:
        raise ValueError("need 0 < minimum <= maximum")
    s, n = _counts(successes, trials)
    s, n = s.ravel(), n.ravel()
    observed = n > 0
    s, n = s[observed], n[observed]
    if s.size < 3:
        return default
    pooled = float(s.sum() / n.sum())
    spread = pooled * (1.0 - pooled)
    mean_inverse_n = float(np.mean(1.0 / n))
    # With one trial per group the rates carry no information about between-group spread.
    if spread <= 0.0 or mean_inverse_n >= 1.0:
        return default
    variance = float(np.var(s / n, ddof=1))
    rho = (variance / spread - mean_inverse_n) / (1.0 - mean_inverse_n)
    if rho <= 0.0:
        return default
    if rho >= 1.0:
        return minimum
    return float(np.clip(1.0 / rho - 1.0, minimum, maximum))


def beta_posterior(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    parent_rate: npt.ArrayLike,
    strength: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Alpha and beta of the Beta posterior, e.g. for Thompson sampling.

    A parameter is 0 only when its prior pseudo-count is 0 (strength 0, or parent rate
    exactly 0 or 1) and no matching outcome was observed; samplers reject 0, so keep
    strength > 0 and the parent rate inside (0, 1) when sampling.
    """
    s, n = _counts(successes, trials)
    parent = _rates(parent_rate, "parent_rate")
    k = _strengths(strength)
    alpha = s + k * parent
    beta = (n - s) + k * (1.0 - parent)
    return np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class RateSummary:
    """Per-group rate, 95% Wilson interval and shrunken rate; all arrays are read-only.

    ``eq=False`` because element-wise array comparison has no single truth value.
    """

    successes: FloatArray
    trials: FloatArray
    value: FloatArray
    lower: FloatArray
    upper: FloatArray
    smoothed: FloatArray


def summarize_rates(
    successes: npt.ArrayLike,
    trials: npt.ArrayLike,
    *,
    parent_rate: npt.ArrayLike,
    strength: npt.ArrayLike,
) -> RateSummary:
    """Raw rate (0 where there are no trials), Wilson bounds and shrunken rate per group."""
    s, n = _counts(successes, trials)
    value = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    lower, upper = wilson_interval(s, n)
    smoothed = np.broadcast_to(
        shrink_toward(s, n, parent_rate=parent_rate, strength=strength), s.shape
    ).copy()
    arrays = (s, n, value, lower, upper, smoothed)
    for array in arrays:
        array.setflags(write=False)
    return RateSummary(*arrays)
