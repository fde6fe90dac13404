"""Protobuf ↔ domain for the learning service."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from operator import attrgetter
from typing import cast

import numpy as np
import numpy.typing as npt
from google.protobuf import struct_pb2
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.learning.domain.evaluation import Evaluation
from services.learning.domain.jobs import Frequency
from services.learning.domain.metrics import MetricView, RateView
from services.learning.domain.model import SLOTS, LogOddsModel, ModelSummary
from services.learning.domain.ranking import (
    REASON_BELOW_FLOOR,
    REASON_DUPLICATE,
    REASON_OVER_LIMIT,
    REASON_PREVIOUSLY_DISMISSED,
    REASON_PROBATION,
)
from services.learning.domain.rates import wilson_interval
from services.learning.domain.scopes import Dimension, ScopeType
from services.learning.usecases.evaluate_model import EvaluateRequest
from services.learning.usecases.fit_model import TuneOutcome
from services.learning.usecases.mine_patterns import PATTERN_TYPES
from services.learning.usecases.rank_suggestions import (
    Candidates,
    InlineFindings,
    RankOptions,
    RankOutcome,
    RankRequest,
)
from services.learning.usecases.read_metrics import ScopeName, ThresholdView
from services.learning.usecases.run_jobs import JobRunView, RunJobsRequest
from shared.convert import timestamp_from_pb, timestamp_to_pb
from shared.db.models import PatternRow
from shared.errors import FieldViolation, InvalidArgument, Violations

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
    REASON_BELOW_FLOOR: learning_pb2.SUPPRESSION_REASON_BELOW_THRESHOLD,
    REASON_DUPLICATE: learning_pb2.SUPPRESSION_REASON_DUPLICATE,
    REASON_PREVIOUSLY_DISMISSED: learning_pb2.SUPPRESSION_REASON_PREVIOUSLY_DISMISSED,
    REASON_PROBATION: learning_pb2.SUPPRESSION_REASON_NOISY_RULE,
    REASON_OVER_LIMIT: learning_pb2.SUPPRESSION_REASON_OVER_LIMIT,
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


_FINDING_INPUT = attrgetter(
    "client_finding_id",
    "rule_id",
    "category",
    "severity",
    "confidence",
    "file_path",
    "line_start",
    "line_end",
    "title",
    "message",
    "suggested_fix",
    "code_context",
)


def inline_findings_from_pb(findings: Sequence[common_pb2.FindingInput]) -> InlineFindings:
    """The inline findings as columns: what ``shared.convert.finding_from_pb`` makes of each
    (ids "" -> None, rule and path stripped, line_end defaulting to line_start), read from every
    message in one pass with no object per finding."""
    if not findings:
        return InlineFindings.of(())
    (
        client_finding_id,
        rule_id,
        category,
        severity,
        confidence,
        file_path,
        line_start,
        line_end,
        title,
        message,
        suggested_fix,
        code_context,
    ) = zip(*map(_FINDING_INPUT, findings), strict=True)
    return InlineFindings(
        client_finding_id=[v or None for v in client_finding_id],
        rule_id=[v.strip() for v in rule_id],
        category=list(category),
        severity=list(severity),
        confidence=list(confidence),
        file_path=[v.strip() for v in file_path],
        line_start=list(line_start),
        line_end=[end or start for start, end in zip(line_start, line_end, strict=True)],
        title=list(title),
        message=list(message),
        suggested_fix=list(suggested_fix),
        code_context=list(code_context),
    )


def rank_request_from_pb(request: learning_pb2.RankSuggestionsRequest) -> RankRequest:
    options = request.options
    return RankRequest(
        repository_url=request.repository_url.strip(),
        pull_request=request.pull_request,
        finding_ids=tuple(request.finding_ids),
        inline=inline_findings_from_pb(request.findings),
        options=RankOptions(
            max_results=options.max_results,
            diversity=options.diversity,
            exploration=options.exploration,
            seed=options.seed,
            explain=options.explain if options.HasField("explain") else True,
        ),
    )


def rank_outcome_to_pb(
    outcome: RankOutcome, *, explain: bool = True
) -> learning_pb2.RankSuggestionsResponse:
    """The answer. Its ranked findings are encoded straight to protobuf wire bytes and parsed
    in one call (see ``_encode_findings``): building 10,000 messages field by field from Python
    cost several times what protobuf's own decode/encode of the answer does. ``explain=False``
    leaves the explanations out (the lean answer: order, scores and suppression)."""
    response = learning_pb2.RankSuggestionsResponse(
        learning_applied=outcome.learning_applied,
        not_applied_reason=outcome.not_applied_reason,
        model_version=outcome.model_version,
        item_errors=[
            common_pb2.ItemError(index=p.index, code=p.code, reason=p.reason, message=p.message)
            for p in outcome.problems
        ],
        hidden_count=outcome.hidden,
        expected_useful_hidden=outcome.expected_useful_hidden,
    )
    explainer = _Explainer(outcome) if explain and outcome.explanations is not None else None
    response.MergeFromString(_encode_findings(outcome, explainer))
    return response


# --- Protobuf wire format (https://protobuf.dev/programming-guides/encoding/), for the ranked
# findings only. Field order on the wire is free, so each message puts its fixed-width fields
# (doubles, booleans, the enum) in one block encoded for all findings at once with NumPy. The
# parse normalises everything else (a zero written explicitly reads as the default), so the
# answer is the message the field-by-field construction built; a test compares the two.
_VARINTS = [bytes([v]) for v in range(128)] + [
    bytes([(v & 0x7F) | 0x80, v >> 7]) for v in range(128, 1 << 14)
]


def _varint(value: int) -> bytes:
    if value < 1 << 14:
        return _VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(tag: bytes, value: str) -> bytes:
    if not value:
        return b""
    encoded = value.encode("utf-8")
    return tag + _varint(len(encoded)) + encoded


def _fixed_block(n: int, fields: Sequence[tuple[int, str, npt.ArrayLike]]) -> list[bytes]:
    """Every row's fixed-width fields, encoded: (field number, "d" double or "b" one-byte
    varint, values) per field; one bytes object per row."""
    layout: list[tuple[str, str]] = []
    for number, kind, _ in fields:
        layout.append((f"t{number}", f"V{len(_key(number, kind))}"))
        layout.append((f"v{number}", "<f8" if kind == "d" else "u1"))
    block = np.zeros(n, dtype=np.dtype(layout))
    for number, kind, values in fields:
        block[f"t{number}"] = np.void(_key(number, kind))
        block[f"v{number}"] = values
    rows = block.view(np.dtype((np.void, block.dtype.itemsize))).tolist()
    return cast("list[bytes]", rows)


def _key(number: int, kind: str) -> bytes:
    return _varint(number << 3 | (1 if kind == "d" else 0))


_REF = b"\x0a"
_FINGERPRINT = b"\x12"
_RANK = b"\x18"
_DETAIL = b"\x42"
_DUPLICATE_OF = b"\x4a"
_EXPLANATION = b"\x5a"
_RULE_ID = b"\x62"
_CATEGORY = b"\x6a"
_SUMMARY = b"\x62"
_PROBATION_SCOPE = b"\x92\x01"
_FINDING = b"\x0a"


def _ref_bodies(candidates: Candidates) -> list[bytes]:
    """Each candidate's FindingRef, length-prefixed."""
    bodies = map(
        b"".join,
        zip(
            _varint_fields(b"\x08", candidates.request_index),
            _varint_fields(b"\x10", candidates.finding_id),
            [_string_field(b"\x1a", c) for c in candidates.client_finding_id],
            strict=True,
        ),
    )
    return [_varint(len(body)) + body for body in bodies]


def _varint_fields(tag: bytes, values: Sequence[int]) -> list[bytes]:
    """``tag`` and each non-negative value as a varint ("" for 0, the default)."""
    if not values:
        return []
    if max(values) < len(_VARINTS):
        return list(map(_varint_table(tag).__getitem__, values))
    return [tag + _varint(v) if v else b"" for v in values]


@cache
def _varint_table(tag: bytes) -> list[bytes]:
    return [b"", *(tag + v for v in _VARINTS[1:])]


def _encode_findings(outcome: RankOutcome, explainer: _Explainer | None) -> bytes:
    """The ``findings`` field of the answer (every candidate in ``outcome.order``) as wire
    bytes."""
    candidates = Candidates.of(outcome.candidates)
    n = len(candidates)
    unspecified = learning_pb2.SUPPRESSION_REASON_UNSPECIFIED
    fixed = _fixed_block(
        n,
        [
            (4, "d", outcome.score),
            (5, "d", outcome.probability),
            (6, "b", outcome.suppressed),
            (7, "b", [_REASONS.get(r, unspecified) for r in outcome.reason]),
            (10, "b", outcome.flagged),
        ],
    )
    refs = _ref_bodies(candidates)
    # Rules, categories and fingerprints repeat: each distinct one is encoded once.
    rules = {r: _string_field(_RULE_ID, r) for r in set(candidates.rule_id)}
    categories = {c: _string_field(_CATEGORY, c) for c in set(candidates.category)}
    fingerprints = {f: _string_field(_FINGERPRINT, f) for f in set(candidates.fingerprint)}
    details = [
        _string_field(_DETAIL, outcome.detail(i)) if hidden else b""
        for i, hidden in enumerate(outcome.suppressed)
    ]
    duplicates = [_DUPLICATE_OF + refs[d] if d >= 0 else b"" for d in outcome.duplicate_of]
    if explainer is None:
        explanations = [b""] * n
    else:
        explanations = [
            _EXPLANATION + _varint(len(explanation)) + explanation
            for explanation in explainer.encoded()
        ]
    bodies = list(
        map(
            b"".join,
            zip(
                [_REF + ref for ref in refs],
                map(fingerprints.__getitem__, candidates.fingerprint),
                _varint_fields(_RANK, outcome.rank),
                fixed,
                details,
                map(rules.__getitem__, candidates.rule_id),
                map(categories.__getitem__, candidates.category),
                duplicates,
                explanations,
                strict=True,
            ),
        )
    )
    return b"".join([_FINDING + _varint(len(bodies[i])) + bodies[i] for i in outcome.order])


_LevelKey = tuple[int, int, str, str]
_LEVELS: dict[int, tuple[LogOddsModel, dict[_LevelKey, tuple[bytes, str]]]] = {}
"""id(model) -> (the model, its levels); holding the model keeps its id from being reused."""
_LEVELS_KEPT = 100_000


def _level(
    model: LogOddsModel, slot: int, column: int, label: str, contribution: float
) -> tuple[bytes, str]:
    """One term level's encoded TermContribution (as an Explanation holding just it) and its
    words for the summary. Cached per model: consecutive requests see the same levels, and
    each costs a message, an encoding and an evidence lookup."""
    entry = _LEVELS.get(id(model))
    if entry is None or entry[0] is not model or len(entry[1]) > _LEVELS_KEPT:
        if len(_LEVELS) > 1:
            _LEVELS.clear()  # a refreshed model: the old one's levels go
        entry = _LEVELS[id(model)] = (model, {})
    levels = entry[1]
    # The contribution's exact bits (hex tells -0.0 from 0.0) are part of the key.
    key = (slot, column, label, contribution.hex())
    found = levels.get(key)
    if found is not None:
        return found
    acted_on, outcomes = model.evidence(slot, column)
    encoded = learning_pb2.Explanation(
        terms=[
            learning_pb2.TermContribution(
                term=SLOTS[slot],
                key=label,
                contribution=contribution,
                acted_on=acted_on,
                outcomes=outcomes,
            )
        ]
    ).SerializeToString()
    words = (
        f"{_TERM_WORDS.get(SLOTS[slot], SLOTS[slot] + ' {key}').format(key=label)} "
        f"{contribution:+.2f} (acted on {acted_on} of {outcomes})"
    )
    levels[key] = (encoded, words)
    return encoded, words


class _Explainer:
    """The explanations of one ranking, with the work done once per distinct term.

    Every term is categorical (confidence is binned), so a (slot, column) pair — a level of a
    term — has one contribution, one label and one evidence count wherever it appears. Each
    distinct pair is encoded once, as the bytes of an Explanation holding just that term, and its
    words for the summary are formatted once; a finding's terms are then the concatenation of its
    pairs' bytes (merging concatenated encodings appends to a repeated field), and its summary a
    join of cached words. Which terms each finding has, and its three largest, come from NumPy.
    """

    def __init__(self, outcome: RankOutcome) -> None:
        e = outcome.explanations
        assert e is not None
        self._outcome = outcome
        self._e = e
        model = e.state.model
        prediction = e.prediction
        contributions = prediction.contributions
        columns = prediction.columns
        candidates = Candidates.of(outcome.candidates)
        n, slots = contributions.shape
        # A level the model never saw (or a path kind the file is not) contributes nothing and
        # is left out; the base (slot 0) is always there.
        present = ~((columns < 0) & (contributions == 0.0))
        present[:, 0] = True
        # Per slot, the bytes and words of each finding's level there ("" where absent).
        slot_bytes = np.full((n, slots), b"", dtype=object)
        slot_words = np.full((n, slots), "", dtype=object)
        for slot in range(slots):
            rows = np.flatnonzero(present[:, slot])
            if rows.size == 0:
                continue
            levels, first, inverse = np.unique(
                columns[rows, slot], return_index=True, return_inverse=True
            )
            encoded: list[bytes] = []
            words: list[str] = []
            for column, row in zip(levels.tolist(), rows[first].tolist(), strict=True):
                contribution = float(contributions[row, slot])
                label = model.term_label(
                    slot,
                    category=candidates.category[row],
                    rule_id=candidates.rule_id[row],
                    severity=candidates.severity[row],
                    confidence=candidates.confidence[row],
                )
                level = _level(model, slot, column, label, contribution)
                encoded.append(level[0])
                words.append(level[1])
            slot_bytes[rows, slot] = np.array(encoded, dtype=object)[inverse]
            slot_words[rows, slot] = np.array(words, dtype=object)[inverse]
        # Concatenated slot by slot (element-wise on object arrays: no list per finding).
        terms = slot_bytes[:, 0]
        for slot in range(1, slots):
            terms = terms + slot_bytes[:, slot]
        self.terms: list[bytes] = terms.tolist()
        # The three largest terms after the base, ties in slot order (a stable sort).
        size = np.where(present, np.abs(contributions), -1.0)
        size[:, 0] = -1.0
        top = np.argsort(-size, axis=1, kind="stable")[:, :3]
        top_present = np.take_along_axis(present, top, axis=1)
        top_present[:, :] &= np.take_along_axis(size, top, axis=1) >= 0.0
        self._words = slot_words
        self._top = top
        self._top_present = top_present
        self._logit = prediction.logit

    def encoded(self) -> list[bytes]:
        """Each candidate's Explanation as wire bytes (indexed like the candidates)."""
        e, outcome = self._e, self._outcome
        n = len(outcome.candidates)
        fixed = _fixed_block(
            n,
            [
                (1, "d", Candidates.of(outcome.candidates).confidence),
                (2, "d", outcome.probability),
                (10, "d", e.diversity_penalty),
                (11, "b", e.explored),
                (14, "d", self._logit),
                (15, "d", e.upper),
                (16, "d", e.floor),
                (17, "d", e.severity_value),
            ],
        )
        # The sentence only for shown findings: suppressed ones carry their detail.
        summaries = [b""] * n
        shown = np.flatnonzero(~np.asarray(outcome.suppressed, dtype=bool))
        for i, summary in zip(shown.tolist(), self._summaries(shown), strict=True):
            summaries[i] = _string_field(_SUMMARY, summary)
        scopes = {s: _string_field(_PROBATION_SCOPE, s) for s in set(e.probation_evidence)}
        return list(
            map(
                b"".join,
                zip(
                    fixed,
                    summaries,
                    self.terms,
                    map(scopes.__getitem__, e.probation_evidence),
                    strict=True,
                ),
            )
        )

    def _summaries(self, rows: npt.NDArray[np.intp]) -> list[str]:
        """'P(acted on) 0.42: base rate -0.85 (acted on 4210 of 10004); rule X in this
        repository +1.20 (acted on 18 of 21); ...' with the three largest terms after the base,
        for each of ``rows``: assembled column by column from the words of each term level,
        with each distinct number formatted once."""
        if rows.size == 0:
            return []
        outcome = self._outcome
        probability = np.asarray(outcome.probability, dtype=np.float64)[rows]
        score = np.asarray(outcome.score, dtype=np.float64)[rows]
        words = self._words[rows]
        top, top_present = self._top[rows], self._top_present[rows]
        text = _formatted(probability, "P(acted on) {:.2f}: ") + words[:, 0]
        for k in range(top.shape[1]):
            term = np.take_along_axis(words, top[:, k : k + 1], axis=1)[:, 0]
            text = text + np.where(top_present[:, k], "; " + term, "")
        differs = np.abs(score - probability) > 1e-12
        text = text + np.where(differs, _formatted(score, "; score {:.3f}"), "")
        summaries: list[str] = text.tolist()
        return summaries


def _formatted(values: npt.NDArray[np.float64], template: str) -> npt.NDArray[np.object_]:
    """``template.format(v)`` for each value, formatting each distinct value once."""
    distinct, inverse = np.unique(values, return_inverse=True)
    texts = np.array([template.format(v) for v in distinct.tolist()], dtype=object)
    formatted: npt.NDArray[np.object_] = texts[inverse.reshape(-1)]
    return formatted


_TERM_WORDS = {
    "base": "base rate",
    "team_rule": "rule {key} in this team",
    "repository_rule": "rule {key} in this repository",
    "team": "this team",
    "repository": "this repository",
    "path:test": "test code",
    "path:generated": "generated code",
    "path:vendored": "vendored code",
}


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
    return threshold


def model_summary_to_pb(summary: ModelSummary) -> learning_pb2.ModelSummary:
    c = summary.calibration
    v = summary.validation
    return learning_pb2.ModelSummary(
        version=summary.version,
        fit_time=timestamp_to_pb(summary.fitted_at),
        samples=summary.samples,
        acted_on=summary.acted_on,
        half_life_days=summary.half_life_days or 0.0,
        prior_variance=summary.prior_variance,
        calibration=learning_pb2.CalibrationSummary(
            method="platt" if c.samples else "identity",
            samples=c.samples,
            expected_calibration_error=c.ece,
            raw_expected_calibration_error=c.raw_ece,
            slope=c.slope,
            offset=c.offset,
        ),
        validation_auc=math.nan if v is None else v.auc,
        validation_log_loss=math.nan if v is None else v.log_loss,
        validation_samples=0 if v is None else v.samples,
    )


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
        model=model_summary_to_pb(outcome.model),
    )


def evaluate_request_from_pb(request: learning_pb2.EvaluateModelRequest) -> EvaluateRequest:
    violations = Violations()
    cut = (
        timestamp_from_pb(request.cut_time, "cut_time", violations)
        if request.HasField("cut_time")
        else None
    )
    violations.raise_if_any()
    return EvaluateRequest(
        cut_time=cut,
        holdout_fraction=request.holdout_fraction,
        k=request.k,
        scope=scope_from_pb(request.scope),
    )


def evaluation_to_pb(evaluation: Evaluation) -> learning_pb2.EvaluateModelResponse:
    return learning_pb2.EvaluateModelResponse(
        cut_time=timestamp_to_pb(evaluation.cut_time),
        train_findings=evaluation.train_findings,
        test_findings=evaluation.test_findings,
        test_acted_on=evaluation.test_acted_on,
        test_reviews=evaluation.test_reviews,
        k=evaluation.k,
        methods=[
            learning_pb2.MethodEvaluation(
                method=m.method,
                auc=m.auc,
                precision_at_k=m.precision_at_k,
                expected_calibration_error=m.expected_calibration_error,
                hidden_share=m.hidden_share,
                acted_on_hidden_share=m.acted_on_hidden_share,
                ignored_hidden_share=m.ignored_hidden_share,
            )
            for m in evaluation.methods
        ],
        model=model_summary_to_pb(evaluation.model),
    )


def pattern_to_pb(row: PatternRow, scope: ScopeName) -> learning_pb2.Pattern:
    kinds = {v: k for k, v in PATTERN_TYPES.items()}
    # Acceptance is positive / decided here as everywhere; smoothed toward the scope's.
    positive, decided = row.positive, row.positive + row.negative
    lower, upper = wilson_interval(positive, decided)
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
            trials=decided,
            value=positive / decided if decided else 0.0,
            wilson95=common_pb2.Interval(lower=float(lower), upper=float(upper)),
            smoothed=row.acceptance_smoothed,
        ),
        recent_occurrences=row.recent_occurrences,
        prior_occurrences=row.prior_occurrences,
        first_seen=timestamp_to_pb(row.first_seen),
        last_seen=timestamp_to_pb(row.last_seen),
        p_value=row.p_value,
    )


MAX_JOB_REPOSITORIES = 10_000


def run_jobs_request_from_pb(request: learning_pb2.RunJobsRequest, caller: str) -> RunJobsRequest:
    violations = Violations()
    frequency: Frequency | None = None
    if request.frequency != common_pb2.JOB_FREQUENCY_UNSPECIFIED:
        try:
            frequency = Frequency(request.frequency)
        except ValueError:
            violations.add("frequency", f"unknown frequency {request.frequency}")
    urls = [url.strip() for url in request.repository_urls]
    if any(not url for url in urls):
        violations.add("repository_urls", "must not contain an empty URL")
    if len(urls) > MAX_JOB_REPOSITORIES:
        violations.add("repository_urls", f"at most {MAX_JOB_REPOSITORIES:,} repositories")
    scheduled = None
    if request.HasField("scheduled_time"):
        scheduled = timestamp_from_pb(request.scheduled_time, "scheduled_time", violations)
    violations.raise_if_any()
    return RunJobsRequest(
        request_id=request.request_id or None,
        frequency=frequency,
        job_names=tuple(name.strip() for name in request.job_names),
        repositories=tuple(dict.fromkeys(urls)) if urls else None,
        scheduled_time=scheduled,
        caller=caller,
    )


def job_run_to_pb(view: JobRunView) -> learning_pb2.JobRun:
    record = view.record
    summary = struct_pb2.Struct()
    summary.update(record.summary)
    run = learning_pb2.JobRun(
        run_id=record.run_id,
        job_name=record.job_name,
        frequency=record.frequency,  # type: ignore[arg-type]
        status=int(record.status),  # type: ignore[arg-type]
        attempts=record.attempts,
        error=record.error,
        summary=summary,
        duration_seconds=record.duration_seconds,
        repositories_done=list(record.repositories_done),
        repositories_failed=[
            learning_pb2.RepositoryFailure(repository_url=url, reason=reason)
            for url, reason in record.repositories_failed
        ],
        reason=record.reason,
        holder=record.holder,
        already_ran=view.already_ran,
    )
    run.start_time.CopyFrom(timestamp_to_pb(record.started_at))
    run.scheduled_time.CopyFrom(timestamp_to_pb(record.scheduled_for))
    if record.finished_at is not None:
        run.end_time.CopyFrom(timestamp_to_pb(record.finished_at))
    if record.check_passed is not None:
        run.check_passed = record.check_passed
    return run
