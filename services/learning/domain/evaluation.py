"""Out-of-time evaluation: does learning earn its keep on this system's own history?

The model is fitted on what was known at the cut — findings first seen before it, labelled
only by the reactions that had happened by then — and scores the findings first seen after it,
labelled by their outcome now. Beside it, on the same findings, two baselines an operator would
otherwise use: the bot's raw confidence, and each rule's share of acted-on findings before the
cut. For each: AUC, precision@k per review, ECE, and what the cost-weighted hiding rule would
hide — the share of all findings, of the acted-on ones and of the ignored ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from services.learning.domain.cancellation import NEVER_CANCELLED, CancelToken
from services.learning.domain.features import BoolArray, FloatArray, IntArray, OutcomeLog
from services.learning.domain.learned_state import LearnedState
from services.learning.domain.metrics import MetricInput, build_metrics
from services.learning.domain.model import ModelSummary
from services.learning.domain.model_fitting import FitParameters, fit_model
from services.learning.domain.rates import wilson_interval
from services.learning.domain.scopes import ALL_KEY, Dimension, ScopeType
from services.learning.domain.scoring import auc_score, expected_calibration_error, precision_at_k
from services.learning.domain.suppression import SuppressionPolicy

LEARNED = "learned"
RAW_CONFIDENCE = "raw_confidence"
RULE_RATE = "rule_rate"
CRITICAL = 5


@dataclass(frozen=True)
class MethodScores:
    method: str
    auc: float
    precision_at_k: float
    expected_calibration_error: float
    hidden_share: float
    acted_on_hidden_share: float
    ignored_hidden_share: float


@dataclass(frozen=True)
class Evaluation:
    cut_time: datetime
    train_findings: int
    test_findings: int
    test_acted_on: int
    test_reviews: int
    k: int
    methods: tuple[MethodScores, ...]
    model: ModelSummary

    def method(self, name: str) -> MethodScores:
        return next(m for m in self.methods if m.method == name)


def counts_of(log: OutcomeLog) -> list[MetricInput]:
    """The ALL and RULE counts of a log per scope, as the fold would have counted them."""
    f = log.features
    useful = log.useful.astype(np.int64)
    rows: list[MetricInput] = []
    scopes = (
        (ScopeType.GLOBAL, np.zeros(log.size, dtype=np.int64)),
        (ScopeType.TEAM, f.team_id),
        (ScopeType.REPOSITORY, f.repository_id),
    )
    for scope_type, ids in scopes:
        for dimension, keys in ((Dimension.ALL, None), (Dimension.RULE, f.rule_id)):
            grouped: dict[tuple[int, str], list[int]] = {}
            key_list = [ALL_KEY] * log.size if keys is None else keys.tolist()
            for scope_id, key, y in zip(ids.tolist(), key_list, useful.tolist(), strict=True):
                entry = grouped.setdefault((scope_id, key), [0, 0])
                entry[0] += 1
                entry[1] += y
            rows.extend(
                MetricInput(scope_type, scope_id, dimension, key, n, positive, n - positive, 0)
                for (scope_id, key), (n, positive) in grouped.items()
            )
    return rows


def _hidden_shares(hidden: BoolArray, useful: BoolArray) -> tuple[float, float, float]:
    acted_on = int(useful.sum())
    ignored = useful.size - acted_on
    return (
        float(hidden.mean()) if hidden.size else math.nan,
        float((hidden & useful).sum() / acted_on) if acted_on else math.nan,
        float((hidden & ~useful).sum() / ignored) if ignored else math.nan,
    )


def _scores(
    method: str,
    probability: FloatArray,
    hidden: BoolArray,
    test: OutcomeLog,
    k: int,
) -> MethodScores:
    hidden_share, acted_on_share, ignored_share = _hidden_shares(hidden, test.useful)
    return MethodScores(
        method=method,
        auc=auc_score(probability, test.useful),
        precision_at_k=precision_at_k(probability, test.useful, test.review_id, k=k),
        expected_calibration_error=expected_calibration_error(probability, test.useful),
        hidden_share=hidden_share,
        acted_on_hidden_share=acted_on_share,
        ignored_hidden_share=ignored_share,
    )


def evaluate(
    train: OutcomeLog,
    test: OutcomeLog,
    *,
    cut_time: datetime,
    k: int,
    fit_parameters: FitParameters,
    policy: SuppressionPolicy,
    version: str,
    fitted_at: datetime,
    cancel: CancelToken = NEVER_CANCELLED,
) -> Evaluation:
    model = fit_model(train, fit_parameters, version=version, fitted_at=fitted_at, cancel=cancel)
    team_of_repository = dict(
        zip(train.features.repository_id.tolist(), train.features.team_id.tolist(), strict=True)
    )
    team_of_repository.update(
        zip(test.features.repository_id.tolist(), test.features.team_id.tolist(), strict=True)
    )
    state = LearnedState(
        watermark=0,
        last_fold=None,
        metrics=build_metrics(
            rows=counts_of(train), rule_category={}, team_of_repository=team_of_repository
        ),
        model=model,
    )
    f = test.features
    critical = (f.category == "security") & (f.severity == CRITICAL)
    prediction = model.predict(f)
    probability = prediction.probability
    learned_hidden = np.zeros(test.size, dtype=bool)
    floor = np.zeros(test.size)
    # Decisions are per repository, exactly as a ranking of that repository would take them.
    for repository in np.unique(f.repository_id).tolist():
        cancel.check()
        members = np.flatnonzero(f.repository_id == repository)
        team = int(f.team_id[members[0]])
        known = repository in team_of_repository and _has_counts(state, repository)
        decision, _ = state.hiding(
            prediction=prediction.take(members),
            rules=f.rule_id[members],
            never_hide=critical[members],
            repository_id=repository if known else None,
            team_id=team if known else None,
            policy=policy,
        )
        learned_hidden[members] = decision.hidden
        floor[members] = decision.floor

    raw = np.clip(f.confidence, 0.0, 1.0)
    raw_hidden = (raw < floor) & ~critical

    rule_rate, rule_upper = _rule_rates(train, test)
    rule_hidden = (rule_upper < floor) & ~critical

    methods = (
        _scores(LEARNED, probability, learned_hidden, test, k),
        _scores(RAW_CONFIDENCE, raw, raw_hidden, test, k),
        _scores(RULE_RATE, rule_rate, rule_hidden, test, k),
    )
    return Evaluation(
        cut_time=cut_time,
        train_findings=train.size,
        test_findings=test.size,
        test_acted_on=int(test.useful.sum()),
        test_reviews=int(np.unique(test.review_id).size),
        k=k,
        methods=methods,
        model=model.summary(),
    )


def _has_counts(state: LearnedState, repository: int) -> bool:
    return state.metrics.usefulness_of((ScopeType.REPOSITORY, repository)) is not None


def _rule_rates(train: OutcomeLog, test: OutcomeLog) -> tuple[FloatArray, FloatArray]:
    """Each test finding's rule rate before the cut, (acted on + 1) / (outcomes + 2), and the
    Wilson upper bound of its raw rate (1 for a rule never seen)."""
    rules, inverse = np.unique(
        np.concatenate([train.features.rule_id, test.features.rule_id]), return_inverse=True
    )
    inverse = inverse.reshape(-1)
    train_codes: IntArray = inverse[: train.size]
    test_codes: IntArray = inverse[train.size :]
    outcomes = np.bincount(train_codes, minlength=rules.size).astype(np.float64)
    acted_on = np.bincount(
        train_codes, weights=train.useful.astype(np.float64), minlength=rules.size
    )
    rate = (acted_on + 1.0) / (outcomes + 2.0)
    _, upper = wilson_interval(acted_on, outcomes)
    return rate[test_codes], upper[test_codes]
