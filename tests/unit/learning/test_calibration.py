"""Unit tests for services.learning.domain.calibration."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.learning.domain.calibration import (
    IDENTITY_CURVE,
    SIGMOID_GRID_POINTS,
    CalibrationCurve,
    expected_calibration_error,
    fit_calibration,
)


def _squared_truth(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence that overstates the truth: P(positive) = confidence**2."""
    rng = np.random.default_rng(seed)
    confidence = rng.random(size)
    return confidence, rng.random(size) < confidence**2


def _assert_valid_knots(curve: CalibrationCurve) -> None:
    xs, ys = np.asarray(curve.xs), np.asarray(curve.ys)
    assert xs[0] == 0.0
    assert xs[-1] == 1.0
    assert np.all(np.diff(xs) > 0)
    assert np.all(np.diff(ys) >= 0)
    assert np.all((ys >= 0) & (ys <= 1))


def test_ece_known_values() -> None:
    # Every prediction 0.9, every outcome positive: off by 0.1 everywhere.
    assert expected_calibration_error(np.full(10, 0.9), np.ones(10)) == pytest.approx(0.1)
    # Two bins, each perfectly calibrated on average.
    probabilities = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    outcomes = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(probabilities, outcomes) == pytest.approx(0.0)
    # Bins are weighted by count: 3 samples off by 0.3 and 1 sample off by 0.1.
    assert expected_calibration_error(
        [0.3, 0.3, 0.3, 0.95], [0, 0, 0, 0], bins=10
    ) == pytest.approx((0.9 + 0.95) / 4)


def test_ece_empty_and_probability_one() -> None:
    assert expected_calibration_error([], []) == 0.0
    # 1.0 belongs to the last bin, together with 0.9: mean 0.95 against outcome rate 1.0.
    assert expected_calibration_error([1.0, 0.9], [1, 1]) == pytest.approx(0.05)


def test_isotonic_fixes_miscalibration_with_many_samples() -> None:
    confidence, positive = _squared_truth(20_000, seed=1)
    curve = fit_calibration(confidence, positive)
    assert curve.method == "isotonic"
    assert curve.samples == 20_000
    assert curve.raw_ece > 0.1
    assert curve.ece < 0.05
    held_out_confidence, held_out_positive = _squared_truth(20_000, seed=2)
    held_out_ece = expected_calibration_error(curve.predict(held_out_confidence), held_out_positive)
    assert held_out_ece < 0.05
    _assert_valid_knots(curve)


def test_sigmoid_for_moderate_sample() -> None:
    confidence, positive = _squared_truth(100, seed=3)
    curve = fit_calibration(confidence, positive)
    assert curve.method == "sigmoid"
    assert len(curve.xs) == SIGMOID_GRID_POINTS
    assert curve.ece < curve.raw_ece
    # The fitted sigmoid should bend the curve down in the middle, like the true conf**2.
    assert float(curve.predict(0.5)) < 0.45
    _assert_valid_knots(curve)


def test_small_sample_uses_parent_knots() -> None:
    confidence, positive = _squared_truth(20_000, seed=4)
    parent = fit_calibration(confidence, positive)
    curve = fit_calibration(confidence[:10], positive[:10], parent=parent)
    assert curve.method == "parent"
    assert curve.samples == 10
    assert (curve.xs, curve.ys) == (parent.xs, parent.ys)
    expected_raw = expected_calibration_error(confidence[:10], positive[:10])
    assert curve.raw_ece == pytest.approx(expected_raw)


def test_small_sample_without_parent_is_identity() -> None:
    curve = fit_calibration([0.2, 0.9], [False, True])
    assert curve.method == "identity"
    assert (curve.xs, curve.ys) == (IDENTITY_CURVE.xs, IDENTITY_CURVE.ys)
    assert curve.samples == 2
    assert curve.ece == pytest.approx(curve.raw_ece)
    assert fit_calibration([], []) == IDENTITY_CURVE


def test_thresholds_on_sample_size_are_configurable() -> None:
    confidence, positive = _squared_truth(40, seed=5)
    assert fit_calibration(confidence, positive, min_isotonic_samples=40).method == "isotonic"
    assert fit_calibration(confidence, positive, min_sigmoid_samples=41).method == "identity"


@pytest.mark.parametrize("size", [50, 300])
@pytest.mark.parametrize("outcome", [True, False])
def test_single_class_outcomes_give_valid_flat_curves(size: int, outcome: bool) -> None:
    confidence = np.linspace(0.05, 0.95, size)
    curve = fit_calibration(confidence, np.full(size, outcome))
    _assert_valid_knots(curve)
    predictions = curve.predict(np.linspace(0, 1, 11))
    if outcome:
        assert np.all(predictions > 0.9)
    else:
        assert np.all(predictions < 0.1)


def test_constant_confidence_gives_flat_curve_at_base_rate() -> None:
    positive = np.arange(100) % 4 == 0
    curve = fit_calibration(np.full(100, 0.8), positive)
    assert curve.method == "sigmoid"
    assert np.ptp(curve.ys) == 0.0
    # Platt's smoothed targets pull the rate slightly toward 1/2.
    assert float(curve.predict(0.8)) == pytest.approx(0.25, abs=0.01)


def test_anti_correlated_confidence_gives_flat_curve() -> None:
    confidence, positive = _squared_truth(100, seed=6)
    curve = fit_calibration(1.0 - confidence, positive)
    assert curve.method == "sigmoid"
    assert np.ptp(curve.ys) == 0.0


def test_predict_clips_and_interpolates() -> None:
    curve = CalibrationCurve(
        method="isotonic", xs=(0.0, 0.5, 1.0), ys=(0.1, 0.3, 0.9), samples=5, ece=0, raw_ece=0
    )
    np.testing.assert_allclose(
        curve.predict(np.array([-1.0, 0.0, 0.25, 0.75, 2.0])), [0.1, 0.1, 0.2, 0.6, 0.9]
    )
    np.testing.assert_allclose(IDENTITY_CURVE.predict([0.0, 0.3, 1.0]), [0.0, 0.3, 1.0])


@pytest.mark.parametrize("size", [0, 10, 100, 1000])
def test_dict_round_trip_through_json(size: int) -> None:
    confidence, positive = _squared_truth(size, seed=7)
    parent = fit_calibration(*_squared_truth(500, seed=8))
    curve = fit_calibration(confidence, positive, parent=parent)
    restored = CalibrationCurve.from_dict(json.loads(json.dumps(curve.to_dict())))
    assert restored == curve


@pytest.mark.parametrize(
    "change",
    [
        {"method": "magic"},
        {"xs": [0.0, 0.5]},
        {"xs": [0.1, 1.0], "ys": [0.0, 1.0]},
        {"xs": [0.0, 0.0, 1.0], "ys": [0.0, 0.5, 1.0]},
        {"ys": [0.6, 0.4]},
        {"ys": [0.0, 1.5]},
        {"samples": "12"},
        {"ece": None},
        {"xs": "0,1"},
    ],
)
def test_from_dict_rejects_malformed_data(change: dict[str, object]) -> None:
    data = IDENTITY_CURVE.to_dict() | change
    with pytest.raises(ValueError, match=r"calibration|xs|ys|method|samples"):
        CalibrationCurve.from_dict(data)


def test_curve_is_frozen() -> None:
    with pytest.raises(AttributeError):
        IDENTITY_CURVE.method = "isotonic"  # type: ignore[misc]
    assert replace(IDENTITY_CURVE, samples=3).samples == 3


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        fit_calibration([0.1, 0.2], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_calibration([1.2], [True])
    with pytest.raises(ValueError, match="0/1"):
        fit_calibration([0.5], [0.5])


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=1.0), st.booleans()),
        min_size=0,
        max_size=120,
    ),
    min_sigmoid=st.integers(min_value=1, max_value=40),
    extra_for_isotonic=st.integers(min_value=0, max_value=80),
)
def test_any_fit_is_a_valid_monotone_curve(
    data: list[tuple[float, bool]], min_sigmoid: int, extra_for_isotonic: int
) -> None:
    confidence = np.array([c for c, _ in data], dtype=np.float64)
    positive = np.array([p for _, p in data], dtype=bool)
    curve = fit_calibration(
        confidence,
        positive,
        min_sigmoid_samples=min_sigmoid,
        min_isotonic_samples=min_sigmoid + extra_for_isotonic,
    )
    _assert_valid_knots(curve)
    predictions = curve.predict(np.linspace(0.0, 1.0, 201))
    assert np.all(np.diff(predictions) >= 0)
    assert 0.0 <= curve.ece <= 1.0
    assert curve.samples == len(data)
