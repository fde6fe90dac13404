"""Unit tests for services.learning.domain.patterns."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from services.learning.domain.patterns import (
    ANTI_PATTERN,
    EMERGING,
    PATTERN_KINDS,
    RECURRING,
    TEAM_WEAKNESS,
    PatternStats,
    PatternVerdict,
    classify_patterns,
)


def _stats(
    *,
    occurrences: int = 50,
    positive: int = 20,
    negative: int = 15,
    dismissed: int = 5,
    recent: int = 25,
    prior: int = 25,
) -> PatternStats:
    return PatternStats(
        pattern_key="py:unused-import:<name>",
        rule_id="unused-import",
        category="style",
        normalized_message="unused import <name>",
        occurrences=occurrences,
        positive=positive,
        negative=negative,
        dismissed=dismissed,
        recent_occurrences=recent,
        prior_occurrences=prior,
    )


def _classify(stats: PatternStats, **kwargs: float) -> PatternVerdict:
    (verdict,) = classify_patterns([stats], baseline_acceptance=0.5, **kwargs)  # type: ignore[arg-type]
    return verdict


def test_kind_constants() -> None:
    kinds = {ANTI_PATTERN, TEAM_WEAKNESS, EMERGING, RECURRING}
    assert kinds == PATTERN_KINDS
    assert kinds == {"anti_pattern", "team_weakness", "emerging", "recurring"}


def test_rarely_accepted_pattern_is_anti_pattern() -> None:
    stats = _stats(positive=3, negative=30, dismissed=7)
    verdict = _classify(stats)
    assert verdict.kind == ANTI_PATTERN
    expected = binomtest(3, 40, 0.5, alternative="less").pvalue
    assert verdict.p_value == pytest.approx(expected, rel=1e-9)


def test_dismissals_count_against_acceptance() -> None:
    # Without dismissals 10/20 is exactly the baseline; 30 dismissals make it rejected.
    assert _classify(_stats(positive=10, negative=10, dismissed=0)).kind == RECURRING
    assert _classify(_stats(positive=10, negative=10, dismissed=30)).kind == ANTI_PATTERN


def test_usually_accepted_pattern_is_team_weakness() -> None:
    stats = _stats(positive=36, negative=3, dismissed=1)
    verdict = _classify(stats)
    assert verdict.kind == TEAM_WEAKNESS
    expected = binomtest(36, 40, 0.5, alternative="greater").pvalue
    assert verdict.p_value == pytest.approx(expected, rel=1e-9)


def test_growing_pattern_is_emerging() -> None:
    stats = _stats(recent=40, prior=8)
    verdict = _classify(stats)
    assert verdict.kind == EMERGING
    expected = binomtest(40, 48, 0.5, alternative="greater").pvalue
    assert verdict.p_value == pytest.approx(expected, rel=1e-9)


def test_brand_new_pattern_is_emerging() -> None:
    # No prior occurrences at all: the ratio is taken against max(prior, 1).
    verdict = _classify(
        _stats(occurrences=12, positive=5, negative=5, dismissed=0, recent=12, prior=0)
    )
    assert verdict.kind == EMERGING
    assert verdict.p_value == pytest.approx(0.5**12)


def test_emerging_needs_both_ratio_and_significance() -> None:
    # Significant growth (p ~ 0.001) but only 1.5x: not emerging.
    ratio_too_small = _classify(_stats(occurrences=250, recent=150, prior=100))
    assert ratio_too_small.kind == RECURRING
    # 4x growth but only four occurrences: p = 1/16, not significant.
    too_few = _classify(
        _stats(occurrences=10, positive=5, negative=5, dismissed=0, recent=4, prior=0)
    )
    assert too_few.kind == RECURRING
    assert too_few.p_value == pytest.approx(0.5**4)
    # A looser ratio lets the first case through.
    assert _classify(_stats(occurrences=250, recent=150, prior=100), emerging_ratio=1.5).kind == (
        EMERGING
    )


def test_unremarkable_pattern_is_recurring_with_smallest_p_value() -> None:
    stats = _stats(positive=20, negative=15, dismissed=5, recent=25, prior=25)
    verdict = _classify(stats)
    assert verdict.kind == RECURRING
    # Growth test not applicable (no growth), so the smaller of the two acceptance tests.
    p_less = binomtest(20, 40, 0.5, alternative="less").pvalue
    p_greater = binomtest(20, 40, 0.5, alternative="greater").pvalue
    assert verdict.p_value == pytest.approx(min(p_less, p_greater), rel=1e-9)


def test_acceptance_verdicts_take_precedence_over_emerging() -> None:
    growing_and_rejected = _stats(positive=2, negative=38, dismissed=0, recent=45, prior=5)
    growing_and_accepted = _stats(positive=38, negative=2, dismissed=0, recent=45, prior=5)
    assert _classify(growing_and_rejected).kind == ANTI_PATTERN
    assert _classify(growing_and_accepted).kind == TEAM_WEAKNESS


def test_min_occurrences_guard() -> None:
    stats = _stats(occurrences=9, positive=0, negative=9, dismissed=0, recent=9, prior=0)
    assert _classify(stats) == PatternVerdict(kind=RECURRING, p_value=1.0)
    assert _classify(stats, min_occurrences=5).kind == ANTI_PATTERN


def test_alpha_controls_significance() -> None:
    stats = _stats(positive=13, negative=27, dismissed=0)  # p ~ 0.019 below baseline
    assert _classify(stats).kind == RECURRING
    assert _classify(stats, alpha=0.05).kind == ANTI_PATTERN


def test_no_decided_outcomes_cannot_be_acceptance_verdict() -> None:
    verdict = _classify(_stats(positive=0, negative=0, dismissed=0))
    assert verdict == PatternVerdict(kind=RECURRING, p_value=1.0)


def test_verdicts_follow_input_order() -> None:
    stats = [
        _stats(positive=2, negative=38, dismissed=0),
        _stats(occurrences=3),
        _stats(positive=38, negative=2, dismissed=0),
        _stats(recent=40, prior=8),
        _stats(),
    ]
    kinds = [v.kind for v in classify_patterns(stats, baseline_acceptance=0.5)]
    assert kinds == [ANTI_PATTERN, RECURRING, TEAM_WEAKNESS, EMERGING, RECURRING]
    assert classify_patterns([], baseline_acceptance=0.5) == []


def test_baseline_matters() -> None:
    stats = _stats(positive=30, negative=10, dismissed=0)
    assert classify_patterns([stats], baseline_acceptance=0.5)[0].kind == TEAM_WEAKNESS
    assert classify_patterns([stats], baseline_acceptance=0.95)[0].kind == ANTI_PATTERN


def test_extreme_baselines_are_clamped_not_fatal() -> None:
    stats = _stats(positive=20, negative=20, dismissed=0)
    assert classify_patterns([stats], baseline_acceptance=0.0)[0].kind == TEAM_WEAKNESS
    assert classify_patterns([stats], baseline_acceptance=1.0)[0].kind == ANTI_PATTERN


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline_acceptance": 1.5}, "baseline"),
        ({"baseline_acceptance": float("nan")}, "baseline"),
        ({"baseline_acceptance": 0.5, "alpha": 0.0}, "alpha"),
        ({"baseline_acceptance": 0.5, "emerging_ratio": 0.0}, "emerging_ratio"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classify_patterns([_stats()], **kwargs)  # type: ignore[arg-type]


def test_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        classify_patterns([_stats(dismissed=-1)], baseline_acceptance=0.5)
