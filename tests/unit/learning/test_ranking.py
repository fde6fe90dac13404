"""Tests for services.learning.domain.ranking: scoring, hiding, diversity and limits."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from services.learning.domain.model import logit
from services.learning.domain.ranking import (
    REASON_BELOW_FLOOR,
    REASON_DUPLICATE,
    REASON_OVER_LIMIT,
    REASON_PREVIOUSLY_DISMISSED,
    REASON_PROBATION,
    RankingInputs,
    RankingPolicy,
    RankingResult,
    pass_through,
    rank_findings,
)


def make_inputs(n: int, **overrides: Any) -> RankingInputs:
    """n unrelated findings (distinct rules, files, far-apart text); overrides per field."""
    rng = np.random.default_rng(n)
    probability = overrides.pop("probability", None)
    if probability is None:
        probability = np.linspace(0.9, 0.3, n) if n > 1 else np.full(n, 0.6)
    fields: dict[str, Any] = {
        "probability": np.asarray(probability, dtype=np.float64),
        "logit": logit(np.asarray(probability, dtype=np.float64)),
        "logit_sd": np.full(n, 0.5),
        "severity": np.full(n, 3),
        "is_security": np.zeros(n, dtype=bool),
        "hide_reason": np.full(n, "", dtype=object),
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


def hidden(reasons: list[str]) -> Any:
    return np.array(reasons, dtype=object)


def test_score_is_the_probability_times_the_severity_value() -> None:
    inputs = make_inputs(3, probability=[0.6, 0.9, 0.9], severity=np.array([3, 3, 5]))
    result = rank_findings(inputs, RankingPolicy())
    assert result.score.tolist() == pytest.approx([0.6, 0.9, 0.9])
    valued = rank_findings(inputs, RankingPolicy(severity_values=(1.0, 1.0, 1.0, 1.0, 1.5)))
    assert valued.score.tolist() == pytest.approx([0.6, 0.9, 1.35])
    assert valued.order.tolist() == [2, 1, 0]
    check_consistent(result)


def test_learned_reasons_hide_and_keep_their_name() -> None:
    inputs = make_inputs(3, hide_reason=hidden(["", REASON_PROBATION, REASON_BELOW_FLOOR]))
    result = rank_findings(inputs, RankingPolicy())
    assert result.suppressed.tolist() == [False, True, True]
    assert result.reason.tolist() == ["", REASON_PROBATION, REASON_BELOW_FLOOR]
    assert result.hidden_by_learning.tolist() == [False, True, True]
    assert result.order.tolist() == [0, 1, 2]
    check_consistent(result)


def test_critical_security_finding_is_flagged_not_dropped() -> None:
    inputs = make_inputs(
        4,
        is_security=np.array([True, True, False, True]),
        severity=np.array([5, 5, 5, 4]),
        hide_reason=hidden([REASON_PROBATION, REASON_BELOW_FLOOR, REASON_PROBATION, "probation"]),
    )
    result = rank_findings(inputs, RankingPolicy())
    # 0 and 1 are critical security: shown and flagged. 3 is only high severity.
    assert result.suppressed.tolist() == [False, False, True, True]
    assert result.flagged.tolist() == [True, True, False, False]
    assert result.reason.tolist() == ["", "", REASON_PROBATION, REASON_PROBATION]
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


def test_suppress_off_keeps_learned_filters_off_but_still_deduplicates() -> None:
    inputs = make_inputs(
        4,
        hide_reason=hidden([REASON_PROBATION, REASON_BELOW_FLOOR, "", ""]),
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
        probability=[0.4, 0.8, 0.6, 0.7],
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
    # 0 scores higher but its rule is on probation; 1 reports the same thing two lines below.
    inputs = make_inputs(
        2,
        probability=[0.9, 0.5],
        hide_reason=hidden([REASON_PROBATION, ""]),
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
        probability=[0.9, 0.5],
        fingerprints=["a", "a"],
        previously_dismissed=np.array([True, False]),
    )
    result = rank_findings(inputs, RankingPolicy())
    assert result.reason.tolist() == [REASON_PREVIOUSLY_DISMISSED, ""]


def test_exploration_is_reproducible_per_seed() -> None:
    inputs = make_inputs(50, probability=np.full(50, 0.4), logit_sd=np.full(50, 0.8))
    first = rank_findings(inputs, RankingPolicy(exploration=True, seed=7))
    again = rank_findings(inputs, RankingPolicy(exploration=True, seed=7))
    other = rank_findings(inputs, RankingPolicy(exploration=True, seed=8))
    for field in dataclasses.fields(RankingResult):
        left, right = getattr(first, field.name), getattr(again, field.name)
        assert left.tolist() == right.tolist(), field.name
    assert not np.array_equal(first.score, other.score)
    # One draw per finding, in input order, from the posterior of its log-odds.
    draws = np.random.default_rng(7).standard_normal(50)
    expected = 1 / (1 + np.exp(-(logit(np.full(50, 0.4)) + 0.8 * draws)))
    assert first.score == pytest.approx(expected)
    assert first.explored.all()
    mean = rank_findings(inputs, RankingPolicy(seed=7))
    assert np.allclose(mean.score, 0.4)
    assert not mean.explored.any()


def test_zero_diversity_is_pure_score_order() -> None:
    rng = np.random.default_rng(2)
    inputs = make_inputs(
        30,
        probability=np.round(rng.random(30), 1),  # rounding makes ties
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
        probability=np.r_[np.linspace(0.95, 0.86, 10), np.linspace(0.8, 0.7, 10)],
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
    inputs = make_inputs(12, rule_ids=["A"] * 10 + ["B"] * 2, probability=np.linspace(0.9, 0.6, 12))
    result = rank_findings(inputs, RankingPolicy(diversity=0.9, mmr_window=4))
    # Only the best four are re-ranked; the rest keep score order with no penalty.
    assert result.order[4:].tolist() == list(range(4, 12))
    assert np.all(result.diversity_penalty[4:] == 0)


def test_max_results_cuts_with_over_limit() -> None:
    inputs = make_inputs(10, hide_reason=hidden([REASON_PROBATION] + [""] * 9))
    result = rank_findings(inputs, RankingPolicy(max_results=3, diversity=0.3))
    shown = result.order[:3]
    assert (~result.suppressed).sum() == 3
    assert result.rank[shown].tolist() == [1, 2, 3]
    assert (result.reason == REASON_OVER_LIMIT).sum() == 6
    assert result.reason[0] == REASON_PROBATION
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
        ({"logit_sd": np.array([-1.0, 1.0])}, "logit_sd"),
        ({"logit": np.array([np.nan, 0.5])}, "logit"),
        ({"hide_reason": np.array(["noisy", ""], dtype=object)}, "hide_reason"),
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
        ({"severity_values": (1.0, 1.0, 1.0, 1.0, -1.0)}, "severity_values"),
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
        probability=rng.random(n),
        severity=rng.integers(1, 6, n),
        hide_reason=np.where(rng.random(n) < 0.05, REASON_PROBATION, "").astype(object),
        fingerprints=[f"fp{i}" for i in rng.integers(0, 9500, n)],
        file_paths=[f"f{i}.py" for i in rng.integers(0, 400, n)],
        line_starts=rng.integers(1, 2000, n),
        rule_ids=[f"R{i}" for i in rng.integers(0, 60, n)],
        categories=[f"c{i}" for i in rng.integers(0, 6, n)],
    )
    policy = RankingPolicy(diversity=0.3)
    result = rank_findings(inputs, policy)
    check_consistent(result)
