"""Unit tests for services.learning.domain.rates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from services.learning.domain.rates import (
    beta_posterior,
    estimate_prior_strength,
    shrink_toward,
    summarize_rates,
    wilson_interval,
)


def test_wilson_matches_known_value() -> None:
    lower, upper = wilson_interval(8, 10)
    assert float(lower) == pytest.approx(0.4902, abs=5e-4)
    assert float(upper) == pytest.approx(0.9433, abs=5e-4)


def test_wilson_matches_scipy_on_many_counts() -> None:
    trials = np.array([1, 5, 10, 37, 200, 1000])
    successes = np.array([0, 2, 10, 11, 3, 999])
    lower, upper = wilson_interval(successes, trials)
    for i, (s, n) in enumerate(zip(successes, trials, strict=True)):
        ci = binomtest(int(s), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
        assert lower[i] == pytest.approx(ci.low, abs=1e-9)
        assert upper[i] == pytest.approx(ci.high, abs=1e-9)


def test_wilson_no_trials_is_uninformative_and_extremes_are_exact() -> None:
    lower, upper = wilson_interval([0, 0, 7], [0, 7, 7])
    np.testing.assert_array_equal(lower[[0, 1]], [0.0, 0.0])
    np.testing.assert_array_equal(upper[[0, 2]], [1.0, 1.0])
    assert 0.0 < upper[1] < 0.5
    assert 0.5 < lower[2] < 1.0


def test_wilson_contains_estimate_and_narrows_with_more_trials() -> None:
    trials = np.array([10, 100, 1000, 10000])
    successes = trials * 3 // 10
    lower, upper = wilson_interval(successes, trials)
    assert np.all(lower <= 0.3)
    assert np.all(upper >= 0.3)
    assert np.all(np.diff(upper - lower) < 0)


def test_wilson_wider_for_larger_z() -> None:
    narrow = wilson_interval(30, 100, z=1.0)
    wide = wilson_interval(30, 100, z=3.0)
    assert wide[0] < narrow[0]
    assert wide[1] > narrow[1]


@pytest.mark.parametrize(("successes", "trials"), [(5, 4), (-1, 4), (float("nan"), 4)])
def test_wilson_rejects_impossible_counts(successes: float, trials: float) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, trials)


def test_shrink_toward_formula_and_broadcasting() -> None:
    result = shrink_toward([3, 0], [10, 0], parent_rate=[0.2, 0.4], strength=10.0)
    np.testing.assert_allclose(result, [(3 + 2) / 20, 0.4])


def test_shrinkage_moves_small_samples_more() -> None:
    parent = 0.1
    small, large = shrink_toward([1, 100], [2, 200], parent_rate=parent, strength=10.0)
    # Both observed rates are 0.5; the small sample should end up much nearer the parent.
    assert abs(small - parent) < abs(large - parent)
    assert parent < small < large < 0.5


def test_shrink_with_zero_strength_is_raw_rate_or_parent_when_empty() -> None:
    result = shrink_toward([1, 0], [4, 0], parent_rate=0.7, strength=0.0)
    np.testing.assert_allclose(result, [0.25, 0.7])


def test_shrink_rejects_bad_parent_or_strength() -> None:
    with pytest.raises(ValueError, match="parent_rate"):
        shrink_toward(1, 2, parent_rate=1.5, strength=1.0)
    with pytest.raises(ValueError, match="strength"):
        shrink_toward(1, 2, parent_rate=0.5, strength=-1.0)


@pytest.mark.parametrize("concentration", [8.0, 40.0])
def test_prior_strength_recovers_simulated_concentration(concentration: float) -> None:
    rng = np.random.default_rng(1234)
    groups, mean = 600, 0.3
    rates = rng.beta(mean * concentration, (1 - mean) * concentration, size=groups)
    trials = rng.integers(20, 120, size=groups)
    successes = rng.binomial(trials, rates)
    estimate = estimate_prior_strength(successes, trials)
    assert concentration / 1.6 < estimate < concentration * 1.6


def test_prior_strength_falls_back_to_default() -> None:
    # Fewer than three groups with trials.
    assert estimate_prior_strength([1, 2, 0], [5, 5, 0], default=7.0) == 7.0
    # Identical rates: no spread beyond binomial noise.
    assert estimate_prior_strength([5, 5, 5, 5], [10, 10, 10, 10], default=7.0) == 7.0
    # Pooled rate of 0: nothing to estimate.
    assert estimate_prior_strength([0, 0, 0], [9, 9, 9], default=7.0) == 7.0
    # One trial per group cannot separate prior spread from noise.
    assert estimate_prior_strength([0, 1, 1, 0], [1, 1, 1, 1], default=7.0) == 7.0


def test_prior_strength_is_clipped() -> None:
    # Rates of exactly 0 and 1 with many trials: the spread is maximal, so the estimate is tiny.
    successes = np.array([0, 50, 0, 50, 0, 50])
    trials = np.full(6, 50)
    assert estimate_prior_strength(successes, trials, minimum=3.0) == 3.0
    # Nearly homogeneous groups: a huge concentration, capped at the maximum.
    rng = np.random.default_rng(7)
    rates = rng.beta(0.5 * 5000, 0.5 * 5000, size=400)
    trials = np.full(400, 2000)
    estimate = estimate_prior_strength(rng.binomial(trials, rates), trials, maximum=150.0)
    assert estimate == 150.0


def test_beta_posterior_mean_is_shrunken_rate() -> None:
    successes, trials = np.array([0, 4, 30]), np.array([0, 10, 40])
    alpha, beta = beta_posterior(successes, trials, parent_rate=0.25, strength=8.0)
    np.testing.assert_allclose(alpha, [2.0, 6.0, 32.0])
    np.testing.assert_allclose(beta, [6.0, 12.0, 16.0])
    np.testing.assert_allclose(
        alpha / (alpha + beta),
        shrink_toward(successes, trials, parent_rate=0.25, strength=8.0),
    )


def test_summarize_rates() -> None:
    successes, trials = np.array([0, 3, 9]), np.array([0, 4, 10])
    summary = summarize_rates(successes, trials, parent_rate=0.5, strength=4.0)
    np.testing.assert_allclose(summary.value, [0.0, 0.75, 0.9])
    np.testing.assert_allclose(summary.smoothed, [0.5, 5 / 8, 11 / 14])
    np.testing.assert_array_equal(summary.trials, trials)
    assert summary.lower[0] == 0.0
    assert summary.upper[0] == 1.0
    assert np.all(summary.lower[1:] <= summary.value[1:])
    assert np.all(summary.value[1:] <= summary.upper[1:])
    with pytest.raises(ValueError, match="read-only"):
        summary.value[0] = 1.0


def test_summarize_rates_does_not_freeze_caller_arrays() -> None:
    successes, trials = np.array([1.0, 2.0]), np.array([2.0, 2.0])
    summarize_rates(successes, trials, parent_rate=0.5, strength=1.0)
    successes[0] = 0.0
    assert successes[0] == 0.0
