"""Tests for services.learning.domain.ranking: scoring, suppression, diversity and limits."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from services.learning.domain.ranking import (
    REASON_BELOW_THRESHOLD,
    REASON_DUPLICATE,
    REASON_NOISY_RULE,
    REASON_OVER_LIMIT,
    REASON_PREVIOUSLY_DISMISSED,
    RankingInputs,
    RankingPolicy,
    RankingResult,
    pass_through,
    rank_findings,
)


def make_inputs(n: int, **overrides: Any) -> RankingInputs:
    """n unrelated findings (distinct rules, files, far-apart text); overrides per field."""
    rng = np.random.default_rng(n)
    fields: dict[str, Any] = {
        "raw_confidence": np.full(n, 0.7),
        "calibrated": np.linspace(0.9, 0.3, n) if n > 1 else np.full(n, 0.6),
        "severity": np.full(n, 3),
        "is_security": np.zeros(n, dtype=bool),
        "rule_alpha": np.full(n, 5.0),
        "rule_beta": np.full(n, 5.0),
        "category_acceptance": np.full(n, 0.5),
        "noisy_rule": np.zeros(n, dtype=bool),
        "threshold": np.full(n, np.nan),
        "previously_dismissed": np.zeros(n, dtype=bool),
        "fingerprints": [f"fp{i}" for i in range(n)],
        "file_paths": [f"src/f{i}.py" for i in range(n)],
        "line_starts": np.arange(n, dtype=np.int64) * 100 + 1,
        "rule_ids": [f"R{i}" for i in range(n)],
        "categories": ["style"] * n,
        "simhashes": rng.integers(0, 2**63, n, dtype=np.uint64),
    }
    for name, value in overrides.items():
        assert name in fields, name
        fields[name] = value
    return RankingInputs(**fields)


def check_consistent(result: RankingResult) -> None:
    n = result.size
    assert sorted(result.order.tolist()) == list(range(n))
    shown = result.order[: int((~result.suppressed).sum())]
    assert not result.suppressed[shown].any()
    assert result.rank[shown].tolist() == list(range(1, shown.size + 1))
    assert np.all(result.rank[result.suppressed] == 0)
    assert np.all((result.reason == "") == ~result.suppressed)
    assert not result.flagged[result.suppressed].any()
    hidden = result.order[shown.size :]
    assert np.all(np.diff(result.score[hidden]) <= 0)


def test_score_lifts_calibration_by_rule_against_category_and_weights_severity() -> None:
    inputs = make_inputs(
        3,
        calibrated=np.array([0.6, 0.6, 0.6]),
        rule_alpha=np.array([5.0, 9.0, 9.0]),
        rule_beta=np.array([5.0, 1.0, 1.0]),
        severity=np.array([3, 3, 5]),
    )
    result = rank_findings(inputs, RankingPolicy())
    # Rule acceptance equal to the category's: no lift.
    assert result.adjusted_probability[0] == pytest.approx(0.6)
    # logit(0.6) + logit(0.9) - logit(0.5) = log(1.5) + log(9) -> odds 13.5.
    assert result.adjusted_probability[1] == pytest.approx(13.5 / 14.5)
    assert result.score[1] == pytest.approx(13.5 / 14.5 * 1.0)
    assert result.score[2] == pytest.approx(13.5 / 14.5 * 1.5)
    assert result.rule_acceptance.tolist() == pytest.approx([0.5, 0.9, 0.9])
    assert result.order.tolist() == [2, 1, 0]
    check_consistent(result)


def test_extreme_probabilities_are_clipped_not_infinite() -> None:
    inputs = make_inputs(
        2, calibrated=np.array([1.0, 0.0]), category_acceptance=np.array([1.0, 0.0])
    )
    result = rank_findings(inputs, RankingPolicy())
    assert np.all(np.isfinite(result.score))
    assert np.all((result.adjusted_probability > 0) & (result.adjusted_probability < 1))


def test_noisy_rule_is_suppressed() -> None:
    inputs = make_inputs(3, noisy_rule=np.array([False, True, False]))
    result = rank_findings(inputs, RankingPolicy())
    assert result.suppressed.tolist() == [False, True, False]
    assert result.reason[1] == REASON_NOISY_RULE
    assert result.order.tolist() == [0, 2, 1]
    check_consistent(result)


def test_critical_security_finding_is_flagged_not_dropped() -> None:
    inputs = make_inputs(
        4,
        is_security=np.array([True, True, False, True]),
        severity=np.array([5, 5, 5, 4]),
        noisy_rule=np.array([True, False, True, True]),
        raw_confidence=np.array([0.9, 0.1, 0.9, 0.9]),
        threshold=np.full(4, 0.5),
    )
    result = rank_findings(inputs, RankingPolicy())
    # 0: noisy, 1: below threshold, both critical security -> shown and flagged.
    assert result.suppressed.tolist() == [False, False, True, True]
    assert result.flagged.tolist() == [True, True, False, False]
    assert result.reason.tolist() == ["", "", REASON_NOISY_RULE, REASON_NOISY_RULE]
    check_consistent(result)


def test_previously_dismissed_is_suppressed_even_when_critical_security() -> None:
    inputs = make_inputs(
        2,
        previously_dismissed=np.array([True, False]),
        is_security=np.array([True, False]),
        severity=np.array([5, 3]),
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_PREVIOUSLY_DISMISSED, ""]
    assert not result.flagged.any()
    relaxed = rank_findings(inputs, RankingPolicy(deduplicate=False))
    assert not relaxed.suppressed.any()


def test_threshold_suppresses_below_only_and_nan_never() -> None:
    inputs = make_inputs(
        4,
        raw_confidence=np.array([0.2, 0.5, 0.8, 0.0]),
        threshold=np.array([0.5, 0.5, 0.5, np.nan]),
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_BELOW_THRESHOLD, "", "", ""]


def test_suppress_off_keeps_learned_filters_off_but_still_deduplicates() -> None:
    inputs = make_inputs(
        4,
        noisy_rule=np.array([True, False, False, False]),
        raw_confidence=np.array([0.9, 0.1, 0.9, 0.9]),
        threshold=np.full(4, 0.5),
        fingerprints=["a", "b", "c", "c"],
        previously_dismissed=np.array([False, False, True, False]),
    )
    result = rank_findings(inputs, RankingPolicy(suppress=False))
    assert result.reason.tolist() == ["", "", REASON_PREVIOUSLY_DISMISSED, ""]
    nothing = rank_findings(inputs, RankingPolicy(suppress=False, deduplicate=False))
    assert not nothing.suppressed.any()


def test_duplicates_collapse_into_the_best_scoring_copy() -> None:
    inputs = make_inputs(
        4,
        calibrated=np.array([0.4, 0.8, 0.6, 0.7]),
        fingerprints=["a", "a", "b", "a"],
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_DUPLICATE, "", "", REASON_DUPLICATE]
    assert result.duplicate_of.tolist() == [1, -1, -1, 1]
    assert result.duplicate_kind.tolist() == ["exact", "", "", "exact"]
    no_dedup = rank_findings(inputs, RankingPolicy(deduplicate=False))
    assert not no_dedup.suppressed.any()
    assert np.all(no_dedup.duplicate_of == -1)


def test_near_duplicate_prefers_a_representative_that_stays_shown() -> None:
    # 0 scores higher but its rule is noisy; 1 reports the same thing two lines below.
    inputs = make_inputs(
        2,
        calibrated=np.array([0.9, 0.5]),
        noisy_rule=np.array([True, False]),
        file_paths=["x.py", "x.py"],
        line_starts=np.array([10, 12]),
        simhashes=np.array([0, 1], dtype=np.uint64),
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_DUPLICATE, ""]
    assert result.duplicate_of.tolist() == [1, -1]
    assert result.duplicate_kind.tolist() == ["near", ""]


def test_previously_dismissed_findings_do_not_swallow_duplicates() -> None:
    inputs = make_inputs(
        2,
        calibrated=np.array([0.9, 0.5]),
        fingerprints=["a", "a"],
        previously_dismissed=np.array([True, False]),
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_PREVIOUSLY_DISMISSED, ""]


def test_exploration_is_reproducible_per_seed() -> None:
    inputs = make_inputs(50, rule_alpha=np.full(50, 2.0), rule_beta=np.full(50, 3.0))
    first = rank_findings(inputs, RankingPolicy(exploration=True, seed=7))
    again = rank_findings(inputs, RankingPolicy(exploration=True, seed=7))
    other = rank_findings(inputs, RankingPolicy(exploration=True, seed=8))
    for field in dataclasses.fields(RankingResult):
        left, right = getattr(first, field.name), getattr(again, field.name)
        assert left.tolist() == right.tolist(), field.name
    assert not np.array_equal(first.rule_acceptance, other.rule_acceptance)
    # One draw per finding, in input order.
    expected = np.random.default_rng(7).beta(np.full(50, 2.0), np.full(50, 3.0))
    assert np.array_equal(first.rule_acceptance, expected)
    assert first.explored.all()
    mean = rank_findings(inputs, RankingPolicy(seed=7))
    assert np.allclose(mean.rule_acceptance, 0.4)
    assert not mean.explored.any()


def test_zero_diversity_is_pure_score_order() -> None:
    rng = np.random.default_rng(2)
    inputs = make_inputs(
        30,
        calibrated=np.round(rng.random(30), 1),  # rounding makes ties
        rule_ids=[f"R{i % 3}" for i in range(30)],
    )
    result = rank_findings(inputs, RankingPolicy())
    expected = np.argsort(-result.score, kind="stable")
    assert result.order.tolist() == expected.tolist()
    assert np.all(result.diversity_penalty == 0)


def test_diversity_spreads_rules_in_the_top_k() -> None:
    # Rule A's ten findings all outscore rule B's ten, in one file and category.
    n = 20
    inputs = make_inputs(
        n,
        calibrated=np.r_[np.linspace(0.95, 0.86, 10), np.linspace(0.8, 0.7, 10)],
        rule_ids=["A"] * 10 + ["B"] * 10,
        file_paths=["x.py"] * n,
        line_starts=np.arange(n) * 100,
    )
    plain = rank_findings(inputs, RankingPolicy())
    diverse = rank_findings(inputs, RankingPolicy(diversity=0.5))
    rules = np.array(["A"] * 10 + ["B"] * 10)
    assert set(rules[plain.order[:5]]) == {"A"}
    assert set(rules[diverse.order[:5]]) == {"A", "B"}
    assert diverse.order[0] == plain.order[0]
    assert diverse.diversity_penalty[diverse.order[0]] == 0
    assert np.all(diverse.diversity_penalty[diverse.order[1:]] > 0)
    check_consistent(diverse)


def test_mmr_window_bounds_the_reranked_head() -> None:
    inputs = make_inputs(12, rule_ids=["A"] * 10 + ["B"] * 2, calibrated=np.linspace(0.9, 0.6, 12))
    result = rank_findings(inputs, RankingPolicy(diversity=0.9, mmr_window=4))
    # Only the best four are re-ranked; the rest keep score order with no penalty.
    assert result.order[4:].tolist() == list(range(4, 12))
    assert np.all(result.diversity_penalty[4:] == 0)


def test_max_results_cuts_with_over_limit() -> None:
    inputs = make_inputs(10, noisy_rule=np.array([True] + [False] * 9))
    result = rank_findings(inputs, RankingPolicy(max_results=3, diversity=0.3))
    shown = result.order[:3]
    assert (~result.suppressed).sum() == 3
    assert result.rank[shown].tolist() == [1, 2, 3]
    assert (result.reason == REASON_OVER_LIMIT).sum() == 6
    assert result.reason[0] == REASON_NOISY_RULE
    check_consistent(result)


def test_pass_through_keeps_input_order() -> None:
    result = pass_through(4)
    assert result.order.tolist() == [0, 1, 2, 3]
    assert result.rank.tolist() == [1, 2, 3, 4]
    assert not result.suppressed.any()
    assert np.all(np.isnan(result.score))
    assert result.reason.tolist() == [""] * 4
    assert pass_through(0).size == 0


def test_empty_request() -> None:
    result = rank_findings(make_inputs(0), RankingPolicy(diversity=0.5, max_results=3))
    assert result.size == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"severity": np.array([0, 3])}, "severity"),
        ({"rule_alpha": np.array([0.0, 1.0])}, "positive"),
        ({"calibrated": np.array([np.nan, 0.5])}, "calibrated"),
        ({"rule_ids": ["R0"]}, "length"),
    ],
)
def test_invalid_inputs_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rank_findings(make_inputs(2, **overrides), RankingPolicy())


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"diversity": 1.5}, "diversity"),
        ({"max_results": -1}, "max_results"),
        ({"mmr_window": 0}, "mmr_window"),
        ({"severity_weights": (1.0, 1.0, 1.0, 1.0, -1.0)}, "severity_weights"),
    ],
)
def test_invalid_policies_are_rejected(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RankingPolicy(**policy)


def test_ten_thousand_findings_with_diversity_rank_consistently() -> None:
    rng = np.random.default_rng(9)
    n = 10_000
    inputs = make_inputs(
        n,
        raw_confidence=rng.random(n),
        calibrated=rng.random(n),
        severity=rng.integers(1, 6, n),
        noisy_rule=rng.random(n) < 0.05,
        threshold=np.where(rng.random(n) < 0.5, np.nan, 0.2),
        fingerprints=[f"fp{i}" for i in rng.integers(0, 9500, n)],
        file_paths=[f"f{i}.py" for i in rng.integers(0, 400, n)],
        line_starts=rng.integers(1, 2000, n),
        rule_ids=[f"R{i}" for i in rng.integers(0, 60, n)],
        categories=[f"c{i}" for i in rng.integers(0, 6, n)],
    )
    policy = RankingPolicy(diversity=0.3)
    result = rank_findings(inputs, policy)
    check_consistent(result)
