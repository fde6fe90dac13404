"""Protobuf ↔ domain for the learning service."""

from __future__ import annotations

import math

from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.learning.model import (
    ALL,
    CATEGORY,
    GLOBAL,
    REPOSITORY,
    RULE,
    SEVERITY,
    TEAM,
    MetricView,
    RateView,
)
from services.learning.pattern_mining import PATTERN_TYPES
from services.learning.reads import ScopeName, ThresholdView
from services.learning.stats import wilson_interval
from services.learning.suggestions import (
    Candidate,
    RankedItem,
    RankOptions,
    RankOutcome,
    RankRequest,
)
from services.learning.tuner import TuneOutcome
from shared.convert import finding_from_pb, timestamp_to_pb
from shared.db.models import PatternRow
from shared.errors import FieldViolation, InvalidArgument

_SCOPE_TYPES = {
    common_pb2.SCOPE_TYPE_UNSPECIFIED: GLOBAL,
    common_pb2.SCOPE_TYPE_GLOBAL: GLOBAL,
    common_pb2.SCOPE_TYPE_TEAM: TEAM,
    common_pb2.SCOPE_TYPE_REPOSITORY: REPOSITORY,
}
_SCOPE_TYPES_PB = {
    GLOBAL: common_pb2.SCOPE_TYPE_GLOBAL,
    TEAM: common_pb2.SCOPE_TYPE_TEAM,
    REPOSITORY: common_pb2.SCOPE_TYPE_REPOSITORY,
}
_DIMENSIONS = {
    learning_pb2.DIMENSION_UNSPECIFIED: CATEGORY,
    learning_pb2.DIMENSION_ALL: ALL,
    learning_pb2.DIMENSION_CATEGORY: CATEGORY,
    learning_pb2.DIMENSION_SEVERITY: SEVERITY,
    learning_pb2.DIMENSION_RULE: RULE,
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
    return common_pb2.Scope(type=_SCOPE_TYPES_PB[scope.scope_type], id=scope.name)


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


def ranked_to_pb(item: RankedItem) -> learning_pb2.RankedFinding:
    ranked = learning_pb2.RankedFinding(
        ref=_ref(item.candidate),
        fingerprint=item.candidate.fingerprint,
        rank=item.rank,
        score=item.score,
        calibrated_probability=item.calibrated,
        suppressed=item.suppressed,
        suppression_reason=_REASONS.get(item.reason, learning_pb2.SUPPRESSION_REASON_UNSPECIFIED),
        suppression_detail=item.detail,
        flagged=item.flagged,
        rule_id=item.candidate.rule_id,
        category=item.candidate.category,
    )
    if item.duplicate_of is not None:
        ranked.duplicate_of.CopyFrom(_ref(item.duplicate_of))
    e = item.explanation
    if e is not None:
        lift = (
            e.adjusted_probability / e.calibrated_probability
            if e.calibrated_probability
            else math.nan
        )
        ranked.explanation.CopyFrom(
            learning_pb2.Explanation(
                raw_confidence=e.raw_confidence,
                calibrated_probability=e.calibrated_probability,
                calibration_source=e.calibration_source,
                severity_weight=e.severity_weight,
                rule_acceptance=e.rule_acceptance,
                category_acceptance=e.category_acceptance,
                adjusted_probability=e.adjusted_probability,
                threshold=e.threshold,
                threshold_source=e.threshold_source,
                diversity_penalty=e.diversity_penalty,
                explored=e.explored,
                summary=(
                    f"P(useful) {e.calibrated_probability:.2f} ({e.calibration_source}) "
                    f"x rule lift {lift:.2f} (rule {e.rule_acceptance:.2f} vs category "
                    f"{e.category_acceptance:.2f}) x severity {e.severity_weight:.1f}"
                    + (f" - diversity {e.diversity_penalty:.2f}" if e.diversity_penalty else "")
                    + f" = {item.score:.3f}"
                ),
            )
        )
    return ranked


def rank_outcome_to_pb(outcome: RankOutcome) -> learning_pb2.RankSuggestionsResponse:
    return learning_pb2.RankSuggestionsResponse(
        findings=[ranked_to_pb(item) for item in outcome.items],
        learning_applied=outcome.learning_applied,
        not_applied_reason=outcome.not_applied_reason,
        model_version=outcome.model_version,
        item_errors=[
            common_pb2.ItemError(index=p.index, code=p.code, reason=p.reason, message=p.message)
            for p in outcome.problems
        ],
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
        dimension=dimension[view.dimension],
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
