"""Unit tests for services.learning.domain.thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.learning.domain.thresholds import choose_threshold

Z = 1.959963984540054


def _wilson_upper(bad: int, n: int) -> float:
    """Scalar Wilson upper bound, written out independently of the module under test."""
    if bad == n:
        return 1.0  # exact value; the formula can round a hair below it
    p = bad / n
    centre = p + Z * Z / (2 * n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + Z * Z / n))


def _brute_force(
    confidence: list[float], useful: list[bool], *, target: float, min_samples: int
) -> tuple[float | None, int, float]:
    """Try every distinct confidence; return (threshold, n, upper) or the best failing one."""
    best: tuple[float, int, float] | None = None
    chosen: tuple[float, int, float] | None = None
    for t in sorted(set(confidence), reverse=True):
        shown = [u for c, u in zip(confidence, useful, strict=True) if c >= t]
        if len(shown) < min_samples:
            continue
        upper = _wilson_upper(shown.count(False), len(shown))
        if upper <= target + 1e-12:
            chosen = (t, len(shown), upper)
        if best is None or upper <= best[2]:
            best = (t, len(shown), upper)
    if chosen is not None:
        return chosen
    assert best is not None
    return None, best[1], best[2]


def _block(value: float, count: int, bad: int) -> tuple[list[float], list[bool]]:
    return [value] * count, [False] * bad + [True] * (count - bad)


def test_picks_lowest_threshold_meeting_the_bar() -> None:
    confidence: list[float] = []
    useful: list[bool] = []
    for value, count, bad in [(0.9, 100, 2), (0.7, 100, 5), (0.5, 100, 50), (0.3, 100, 90)]:
        c, u = _block(value, count, bad)
        confidence += c
        useful += u
    decision = choose_threshold(np.array(confidence), np.array(useful))
    # >= 0.7: 7 bad of 200, upper bound ~0.07; >= 0.5: 57 of 300, far above 10%.
    assert decision.threshold == 0.7
    assert decision.reachable
    assert decision.sample_size == 200
    assert decision.not_useful_rate == pytest.approx(7 / 200)
    assert decision.not_useful_upper == pytest.approx(_wilson_upper(7, 200))
    expected = _brute_force(confidence, useful, target=0.10, min_samples=50)
    assert (decision.threshold, decision.sample_size) == expected[:2]


def test_lower_threshold_wins_even_if_an_intermediate_one_fails() -> None:
    confidence, useful = _block(0.9, 60, 12)  # 20% bad on its own
    c, u = _block(0.4, 400, 0)  # many clean findings below dilute it
    decision = choose_threshold(np.array(confidence + c), np.array(useful + u))
    assert decision.threshold == 0.4
    assert decision.sample_size == 460


def test_min_samples_is_required_at_the_threshold() -> None:
    # 40 perfect findings at the top are too few on their own; the bar is met only lower down.
    confidence, useful = _block(0.95, 40, 0)
    c, u = _block(0.6, 40, 1)
    decision = choose_threshold(np.array(confidence + c), np.array(useful + u), min_samples=50)
    assert decision.threshold == 0.6
    assert decision.sample_size == 80


def test_too_few_samples_defers_to_parent() -> None:
    confidence, useful = _block(0.8, 49, 0)
    decision = choose_threshold(np.array(confidence), np.array(useful))
    assert decision.threshold is None
    assert decision.reachable
    assert decision.sample_size == 49
    assert decision.not_useful_upper == pytest.approx(_wilson_upper(0, 49))
    assert decision.not_useful_rate == 0.0


def test_empty_input_defers_to_parent() -> None:
    decision = choose_threshold(np.array([]), np.array([], dtype=bool))
    assert decision.threshold is None
    assert decision.reachable
    assert decision.sample_size == 0
    assert decision.not_useful_upper == 1.0


def test_unreachable_when_everything_is_noisy() -> None:
    rng = np.random.default_rng(11)
    confidence = rng.random(500)
    useful = rng.random(500) < 0.5
    decision = choose_threshold(confidence, useful)
    assert decision.threshold is None
    assert not decision.reachable
    expected = _brute_force(confidence.tolist(), useful.tolist(), target=0.10, min_samples=50)
    assert decision.sample_size == expected[1]
    assert decision.not_useful_upper == pytest.approx(expected[2])
    assert decision.sample_size >= 50
    assert decision.not_useful_upper > 0.10


def test_accepts_integer_outcomes_and_custom_target() -> None:
    confidence, useful = _block(0.5, 200, 30)  # 15% bad
    strict = choose_threshold(np.array(confidence), np.array(useful, dtype=np.int64))
    lenient = choose_threshold(np.array(confidence), np.array(useful), target=0.25)
    assert strict.threshold is None
    assert not strict.reachable
    assert lenient.threshold == 0.5


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        choose_threshold(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(ValueError, match="target"):
        choose_threshold(np.array([0.1]), np.array([True]), target=0.0)
    with pytest.raises(ValueError, match="finite"):
        choose_threshold(np.array([np.nan]), np.array([True]))
    with pytest.raises(ValueError, match="0/1"):
        choose_threshold(np.array([0.1]), np.array([2]))


def test_large_input_matches_independent_vectorised_check() -> None:
    rng = np.random.default_rng(5)
    size = 300_000
    confidence = np.round(rng.random(size), 3)
    useful = rng.random(size) < confidence
    decision = choose_threshold(confidence, useful)
    assert decision.threshold is not None
    # Independent evaluation of every distinct value via unique + searchsorted.
    values = np.unique(confidence)
    ordered = np.sort(confidence)
    shown = size - np.searchsorted(ordered, values, side="left")
    bad_sorted = np.sort(confidence[~useful])
    bad = bad_sorted.size - np.searchsorted(bad_sorted, values, side="left")
    uppers = np.array([_wilson_upper(int(b), int(n)) for b, n in zip(bad, shown, strict=True)])
    passing = values[(shown >= 50) & (uppers <= 0.10)]
    assert decision.threshold == passing.min()


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.sampled_from([0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0]), st.booleans()),
        max_size=120,
    ),
    min_samples=st.integers(min_value=1, max_value=40),
    target=st.sampled_from([0.05, 0.1, 0.2, 0.4]),
)
def test_agrees_with_brute_force(
    data: list[tuple[float, bool]], min_samples: int, target: float
) -> None:
    confidence = [c for c, _ in data]
    useful = [u for _, u in data]
    decision = choose_threshold(
        np.array(confidence, dtype=np.float64),
        np.array(useful, dtype=bool),
        target=target,
        min_samples=min_samples,
    )
    if len(data) < min_samples:
        assert decision.threshold is None
        assert decision.reachable
        assert decision.sample_size == len(data)
        return
    threshold, sample_size, upper = _brute_force(
        confidence, useful, target=target, min_samples=min_samples
    )
    assert decision.threshold == threshold
    assert decision.reachable == (threshold is not None)
    assert decision.sample_size == sample_size
    assert decision.not_useful_upper == pytest.approx(upper)
