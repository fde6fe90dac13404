"""The model, its fit and the hiding decision, on small in-memory data (no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.learning.domain.features import OutcomeLog, Term, path_kinds
from services.learning.domain.learned_state import LearnedState
from services.learning.domain.metrics import MetricInput, build_metrics
from services.learning.domain.model import SLOTS, LogOddsModel, sigmoid, unique_keys
from services.learning.domain.model_fitting import fit_model
from services.learning.domain.scopes import Dimension, ScopeType
from services.learning.domain.suppression import (
    BELOW_FLOOR,
    PROBATION,
    RuleRecord,
    SuppressionPolicy,
    decide,
    hiding_floor,
    probation,
)
from tests.unit.learning.logs import NOW, features, two_rule_log


def test_the_fit_recovers_the_rules_and_calibrates() -> None:
    model = fit_model(two_rule_log(), version="v", fitted_at=NOW)
    probe = features(2, rule_id=["R_good", "R_bad"])
    p = model.predict(probe).probability
    assert p[0] == pytest.approx(0.8, abs=0.1)
    assert p[1] == pytest.approx(0.1, abs=0.05)
    assert model.calibration.samples > 0
    assert model.calibration.ece < 0.05
    assert model.validation is not None
    assert model.validation.auc > 0.8


def test_contributions_sum_to_the_logit_and_unseen_levels_contribute_nothing() -> None:
    model = fit_model(two_rule_log(), version="v", fitted_at=NOW)
    probe = features(3, rule_id=["R_good", "R_new", "R_bad"], repository_id=[1, 1, 99])
    prediction = model.predict(probe)
    assert np.allclose(prediction.contributions.sum(axis=1), prediction.logit)
    assert np.allclose(prediction.probability, sigmoid(prediction.logit))
    rule = SLOTS.index(Term.RULE.value)
    repository_rule = SLOTS.index(Term.REPOSITORY_RULE.value)
    # A new rule: no rule term; a new repository: no repository-rule term.
    assert prediction.columns[1, rule] == -1
    assert prediction.contributions[1, rule] == 0.0
    assert prediction.columns[2, repository_rule] == -1
    # What the model does not know widens the bound.
    assert prediction.sd[1] > prediction.sd[0]
    assert prediction.upper(1.645)[1] > prediction.probability[1]
    acted_on, outcomes = model.evidence(rule, int(prediction.columns[0, rule]))
    assert 0 < acted_on < outcomes


def test_the_model_document_round_trips() -> None:
    model = fit_model(two_rule_log(), version="v", fitted_at=NOW)
    again = LogOddsModel.from_document(model.to_document())
    probe = two_rule_log(200, seed=5).features
    assert np.allclose(model.predict(probe).logit, again.predict(probe).logit)
    assert np.allclose(model.predict(probe).sd, again.predict(probe).sd)
    assert again.version == "v"
    with pytest.raises(ValueError, match="format"):
        LogOddsModel.from_document({**model.to_document(), "format": 99})


def test_a_non_monotone_confidence_is_learned_per_category() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    confidence = rng.choice([0.3, 0.5, 0.7], n)
    docs = rng.random(n) < 0.5
    # In documentation the low-confidence findings are the useful ones.
    p = np.where(docs, np.where(confidence == 0.3, 0.8, 0.2), np.where(confidence == 0.7, 0.8, 0.2))
    log = OutcomeLog(
        features(
            n, category=np.where(docs, "documentation", "style").tolist(), confidence=confidence
        ),
        seen_at=np.arange(n, dtype=np.float64) * 600,
        review_id=np.arange(n) // 8,
        useful=rng.random(n) < p,
    )
    model = fit_model(log, version="v", fitted_at=NOW)
    probe = features(
        4,
        category=["documentation", "documentation", "style", "style"],
        confidence=[0.3, 0.7, 0.3, 0.7],
    )
    low_docs, high_docs, low_style, high_style = model.predict(probe).probability
    assert low_docs > high_docs + 0.3
    assert high_style > low_style + 0.3


def test_nothing_predicts_gives_the_base_rate() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    log = OutcomeLog(
        features(n, rule_id=[f"R{i}" for i in rng.integers(0, 30, n)]),
        seen_at=np.arange(n, dtype=np.float64) * 600,
        review_id=np.arange(n) // 8,
        useful=rng.random(n) < 0.2,
    )
    p = fit_model(log, version="v", fitted_at=NOW).predict(log.features).probability
    # Nearly one number for everyone, near the base rate: it cannot tell findings apart.
    assert float(np.ptp(p)) < 0.1
    assert float(p.mean()) == pytest.approx(0.2, abs=0.05)


def test_path_kinds() -> None:
    assert path_kinds("tests/test_api.py") & 1
    assert path_kinds("src/api_pb2.py") & 2
    assert path_kinds("vendor/lib/x.go") & 4
    assert path_kinds("src/api/handlers.py") == 0


def test_the_floor_is_absolute_and_relative_to_the_scope() -> None:
    floor = hiding_floor(np.array([0.5, 0.1, 0.9]), cost_ratio=3.0)
    assert floor[0] == pytest.approx(0.25)  # 1 / (1 + 3)
    assert floor[1] == pytest.approx(0.1 / (0.1 + 3 * 0.9))  # odds three times worse
    assert floor[2] == pytest.approx(0.25)


def test_probation_is_decided_by_the_most_specific_scope_with_evidence() -> None:
    policy = SuppressionPolicy(probation_min_outcomes=20)
    record = RuleRecord(
        repository_acted_on=np.array([20, 0, 0]),
        repository_outcomes=np.array([20, 5, 0]),
        team_acted_on=np.array([0, 0, 30]),
        team_outcomes=np.array([40, 40, 30]),
    )
    trial = probation(record, policy)
    # 0: fixed 20 of 20 in its repository, ignored in the team: the repository wins.
    # 1: too little in the repository: the team decides (never acted on: probation).
    # 2: no repository evidence; the team acted on all of them.
    assert trial.on_probation.tolist() == [False, True, False]
    assert trial.evidence.tolist() == ["repository", "team", "team"]


def test_hiding_needs_the_upper_bound_below_the_floor_or_probation() -> None:
    decision = decide(
        probability=np.array([0.05, 0.05, 0.05, 0.5]),
        upper=np.array([0.1, 0.6, 0.6, 0.7]),
        base_rate=np.full(4, 0.5),
        on_probation=np.array([False, False, True, True]),
        never_hide=np.zeros(4, dtype=bool),
        policy=SuppressionPolicy(),
    )
    assert decision.reason.tolist() == [BELOW_FLOOR, "", PROBATION, ""]
    assert decision.hidden.tolist() == [True, False, True, False]


def test_the_global_scope_never_decides() -> None:
    model = fit_model(two_rule_log(), version="v", fitted_at=NOW)
    rows = [
        MetricInput(ScopeType.GLOBAL, 0, Dimension.RULE, "R_bad", 500, 0, 500, 0),
        MetricInput(ScopeType.GLOBAL, 0, Dimension.ALL, "*", 500, 0, 500, 0),
    ]
    state = LearnedState(
        watermark=1,
        last_fold=None,
        metrics=build_metrics(rows=rows, rule_category={}, team_of_repository={7: 7}),
        model=model,
    )
    # A repository of another tenant, with no evidence of its own about R_bad.
    probe = features(1, rule_id=["R_bad"], repository_id=[7], team_id=[7])
    decision, trial = state.hiding(
        prediction=model.predict(probe),
        rules=probe.rule_id,
        never_hide=np.zeros(1, dtype=bool),
        repository_id=7,
        team_id=7,
        policy=SuppressionPolicy(),
    )
    assert not trial.on_probation.any()
    assert trial.evidence.tolist() == [""]
    assert not math.isnan(decision.floor[0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=4), max_size=60), st.booleans())
def test_distinct_keys_are_numpys_sorted_unique_and_inverse(
    texts: list[str], numeric: bool
) -> None:
    """Prediction finds each term's keys by hashing strings instead of np.unique's sort of them;
    the answer must stay np.unique's: the sorted distinct values and each one's position."""
    values = (
        np.array([len(t) for t in texts], dtype=np.int64)
        if numeric
        else np.array(texts, dtype=object)
    )
    expected_keys, expected_inverse = np.unique(values, return_inverse=True)
    keys, inverse = unique_keys(values)
    assert keys == expected_keys.tolist()
    assert inverse.tolist() == expected_inverse.reshape(-1).tolist()
