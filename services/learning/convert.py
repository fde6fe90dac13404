"""Protobuf ↔ domain for the learning service."""

from __future__ import annotations

import math

from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.learning.domain.learned_state import MetricView, RateView
from services.learning.domain.rates import wilson_interval
from services.learning.domain.scopes import Dimension, ScopeType
from services.learning.usecases.mine_patterns import PATTERN_TYPES
from services.learning.usecases.rank_suggestions import (
    Candidate,
    Explanations,
    RankOptions,
    RankOutcome,
    RankRequest,
)
from services.learning.usecases.read_learning import ScopeName, ThresholdView
from services.learning.usecases.tune_thresholds import TuneOutcome
from shared.convert import finding_from_pb, timestamp_to_pb
from shared.db.models import PatternRow
from shared.errors import FieldViolation, InvalidArgument

_SCOPE_TYPES = {
    common_pb2.SCOPE_TYPE_UNSPECIFIED: ScopeType.GLOBAL,
    common_pb2.SCOPE_TYPE_GLOBAL: ScopeType.GLOBAL,
    common_pb2.SCOPE_TYPE_TEAM: ScopeType.TEAM,
    common_pb2.SCOPE_TYPE_REPOSITORY: ScopeType.REPOSITORY,
}
_SCOPE_TYPES_PB = {
    ScopeType.GLOBAL: common_pb2.SCOPE_TYPE_GLOBAL,
    ScopeType.TEAM: common_pb2.SCOPE_TYPE_TEAM,
    ScopeType.REPOSITORY: common_pb2.SCOPE_TYPE_REPOSITORY,
}
_DIMENSIONS = {
    learning_pb2.DIMENSION_UNSPECIFIED: Dimension.CATEGORY,
    learning_pb2.DIMENSION_ALL: Dimension.ALL,
    learning_pb2.DIMENSION_CATEGORY: Dimension.CATEGORY,
    learning_pb2.DIMENSION_SEVERITY: Dimension.SEVERITY,
    learning_pb2.DIMENSION_RULE: Dimension.RULE,
}
_REASONS = {
    "below_threshold": learning_pb2.SUPPRESSION_REASON_BELOW_THRESHOLD,
    "duplicate": learning_pb2.SUPPRESSION_REASON_DUPLICATE,
    "previously_dismissed": learning_pb2.SUPPRESSION_REASON_PREVIOUSLY_DISMISSED,
    "noisy_rule": learning_pb2.SUPPRESSION_REASON_NOISY_RULE,
    "over_limit": learning_pb2.SUPPRESSION_REASON_OVER_LIMIT,
}


def scope_from_pb(scope: common_pb2.Scope) -> ScopeName:
    if scope.type not in _SCOPE_TYPES:
        raise InvalidArgument([FieldViolation("scope.type", "is not a known scope type")])
    return ScopeName(_SCOPE_TYPES[scope.type], scope.id.strip())


def scope_to_pb(scope: ScopeName) -> common_pb2.Scope:
    return common_pb2.Scope(type=_SCOPE_TYPES_PB[ScopeType(scope.scope_type)], id=scope.name)


def dimension_from_pb(dimension: int) -> int:
    for value, internal in _DIMENSIONS.items():
        if value == dimension:
            return internal
    raise InvalidArgument([FieldViolation("dimension", "is not a known dimension")])


def rank_request_from_pb(request: learning_pb2.RankSuggestionsRequest) -> RankRequest:
    options = request.options
    return RankRequest(
        repository_url=request.repository_url.strip(),
        pull_request=request.pull_request,
        finding_ids=tuple(request.finding_ids),
        inline=tuple(finding_from_pb(f) for f in request.findings),
        options=RankOptions(
            max_results=options.max_results,
            diversity=options.diversity,
            exploration=options.exploration,
            seed=options.seed,
        ),
    )


def _ref(candidate: Candidate) -> learning_pb2.FindingRef:
    return learning_pb2.FindingRef(
        index=candidate.index,
        finding_id=candidate.finding_id,
        client_finding_id=candidate.client_finding_id,
    )


def rank_outcome_to_pb(outcome: RankOutcome) -> learning_pb2.RankSuggestionsResponse:
    response = learning_pb2.RankSuggestionsResponse(
        learning_applied=outcome.learning_applied,
        not_applied_reason=outcome.not_applied_reason,
        model_version=outcome.model_version,
        item_errors=[
            common_pb2.ItemError(index=p.index, code=p.code, reason=p.reason, message=p.message)
            for p in outcome.problems
        ],
    )
    response.findings.extend(ranked_to_pb(outcome, i) for i in outcome.order)
    return response


def ranked_to_pb(outcome: RankOutcome, i: int) -> learning_pb2.RankedFinding:
    candidate = outcome.candidates[i]
    suppressed = outcome.suppressed[i]
    ranked = learning_pb2.RankedFinding(
        ref=_ref(candidate),
        fingerprint=candidate.fingerprint,
        rank=outcome.rank[i],
        score=outcome.score[i],
        calibrated_probability=outcome.calibrated[i],
        suppressed=suppressed,
        suppression_reason=_REASONS.get(
            outcome.reason[i], learning_pb2.SUPPRESSION_REASON_UNSPECIFIED
        ),
        suppression_detail=outcome.detail(i) if suppressed else "",
        flagged=outcome.flagged[i],
        rule_id=candidate.rule_id,
        category=candidate.category,
    )
    duplicate = outcome.duplicate_of[i]
    if duplicate >= 0:
        ranked.duplicate_of.CopyFrom(_ref(outcome.candidates[duplicate]))
    e = outcome.explanations
    if e is not None:
        calibrated, adjusted = outcome.calibrated[i], e.adjusted_probability[i]
        ranked.explanation.CopyFrom(
            learning_pb2.Explanation(
                raw_confidence=candidate.confidence,
                calibrated_probability=calibrated,
                calibration_source=e.calibration_source[i],
                severity_weight=e.severity_weight[i],
                rule_acceptance=e.rule_acceptance[i],
                category_acceptance=e.category_acceptance[i],
                adjusted_probability=adjusted,
                threshold=e.threshold[i],
                threshold_source=e.threshold_source[i],
                diversity_penalty=e.diversity_penalty[i],
                explored=e.explored[i],
                # The sentence only for shown findings: suppressed ones carry their detail.
                summary="" if suppressed else _summary(outcome, e, i, calibrated, adjusted),
            )
        )
    return ranked


def _summary(
    outcome: RankOutcome, e: Explanations, i: int, calibrated: float, adjusted: float
) -> str:
    lift = adjusted / calibrated if calibrated else math.nan
    penalty = e.diversity_penalty[i]
    return (
        f"P(useful) {calibrated:.2f} ({e.calibration_source[i]}) x rule lift {lift:.2f} "
        f"(rule {e.rule_acceptance[i]:.2f} vs category {e.category_acceptance[i]:.2f}) "
        f"x severity {e.severity_weight[i]:.1f}"
        + (f" - diversity {penalty:.2f}" if penalty else "")
        + f" = {outcome.score[i]:.3f}"
    )


def rate_to_pb(rate: RateView) -> common_pb2.Rate:
    return common_pb2.Rate(
        successes=rate.successes,
        trials=rate.trials,
        value=rate.value,
        wilson95=common_pb2.Interval(lower=rate.lower, upper=rate.upper),
        smoothed=rate.smoothed,
    )


def metric_to_pb(view: MetricView, scope: ScopeName) -> learning_pb2.LearningMetric:
    dimension = {v: k for k, v in _DIMENSIONS.items() if k != learning_pb2.DIMENSION_UNSPECIFIED}
    counts = view.counts
    return learning_pb2.LearningMetric(
        scope=scope_to_pb(scope),
        dimension=dimension[Dimension(view.dimension)],
        key=view.key,
        shown=counts.shown,
        positive=counts.positive,
        negative=counts.negative,
        dismissed=counts.dismissed,
        pending=counts.shown - counts.reacted,
        acceptance=rate_to_pb(view.acceptance),
        not_useful=rate_to_pb(view.not_useful),
    )


def threshold_to_pb(view: ThresholdView) -> learning_pb2.ConfidenceThreshold:
    entry = view.entry
    threshold = learning_pb2.ConfidenceThreshold(
        scope=scope_to_pb(view.scope),
        category=view.category,
        threshold=math.nan if entry.threshold is None else entry.threshold,
        target_not_useful_rate=entry.target,
        not_useful_upper_bound=entry.not_useful_upper,
        sample_size=entry.sample_size,
        source=entry.source,
    )
    if entry.updated_at is not None:
        threshold.update_time.CopyFrom(timestamp_to_pb(entry.updated_at))
    if view.curve is not None:
        threshold.calibration.CopyFrom(
            learning_pb2.CalibrationSummary(
                method=view.curve.method,
                samples=view.curve.samples,
                expected_calibration_error=view.curve.ece,
                raw_expected_calibration_error=view.curve.raw_ece,
            )
        )
    return threshold


def tune_outcome_to_pb(
    outcome: TuneOutcome, names: dict[tuple[int, int], ScopeName]
) -> learning_pb2.TuneConfidenceThresholdsResponse:
    return learning_pb2.TuneConfidenceThresholdsResponse(
        changes=[
            learning_pb2.ThresholdChange(
                scope=scope_to_pb(names.get(c.scope, ScopeName(c.scope[0], str(c.scope[1])))),
                category=c.category,
                old_threshold=c.old_threshold,
                new_threshold=c.new_threshold,
                old_source=c.old_source,
                new_source=c.new_source,
                sample_size=c.sample_size,
            )
            for c in outcome.changes
        ],
        applied=outcome.applied,
        unchanged_count=outcome.unchanged,
        curves_fitted=outcome.curves_fitted,
    )


def pattern_to_pb(row: PatternRow, scope: ScopeName) -> learning_pb2.Pattern:
    kinds = {v: k for k, v in PATTERN_TYPES.items()}
    positive, reacted = row.positive, row.positive + row.negative + row.dismissed
    lower, upper = wilson_interval(positive, reacted)
    return learning_pb2.Pattern(
        pattern_key=row.pattern_key,
        scope=scope_to_pb(scope),
        rule_id=row.rule_id,
        category=row.category,
        normalized_message=row.normalized_message,
        kind=learning_pb2.PatternKind.Value(f"PATTERN_KIND_{kinds[row.pattern_type].upper()}"),
        occurrences=row.occurrences,
        acceptance=common_pb2.Rate(
            successes=positive,
            trials=reacted,
            value=positive / reacted if reacted else 0.0,
            wilson95=common_pb2.Interval(lower=float(lower), upper=float(upper)),
            smoothed=positive / reacted if reacted else 0.0,
        ),
        recent_occurrences=row.recent_occurrences,
        prior_occurrences=row.prior_occurrences,
        first_seen=timestamp_to_pb(row.first_seen),
        last_seen=timestamp_to_pb(row.last_seen),
        p_value=row.p_value,
    )
