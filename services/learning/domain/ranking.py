"""The pure core of SuggestionRanker: score, deduplicate, suppress and order one review's findings.

The service gathers the learned statistics (calibration curves, rule posteriors, thresholds,
anti-patterns, earlier dismissals) into a :class:`RankingInputs`; everything here is a
deterministic function of those arrays and a :class:`RankingPolicy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.learning.domain.cancellation import NEVER_CANCELLED, CancelToken
from services.learning.domain.dedup import find_duplicates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

REASON_BELOW_THRESHOLD = "below_threshold"
REASON_DUPLICATE = "duplicate"
REASON_PREVIOUSLY_DISMISSED = "previously_dismissed"
REASON_NOISY_RULE = "noisy_rule"
REASON_OVER_LIMIT = "over_limit"
SUPPRESSION_REASONS = (
    REASON_BELOW_THRESHOLD,
    REASON_DUPLICATE,
    REASON_PREVIOUSLY_DISMISSED,
    REASON_NOISY_RULE,
    REASON_OVER_LIMIT,
)

SEVERITY_CRITICAL = 5
PROBABILITY_EPSILON = 1e-4
"""Probabilities are clipped to [eps, 1 - eps] before taking log-odds."""

SIMILARITY_SAME_RULE = 0.6
SIMILARITY_SAME_FILE = 0.25
SIMILARITY_SAME_CATEGORY = 0.15


@dataclass(frozen=True, eq=False)
class RankingInputs:
    """Per-finding features of one ranking request; every field has one entry per finding.

    ``rule_alpha``/``rule_beta`` are the Beta posterior of the rule's acceptance (already shrunk
    toward its category) and must be positive. ``threshold`` is the category's raw-confidence
    threshold, NaN when none applies. ``previously_dismissed`` marks findings whose fingerprint
    was dismissed or rejected earlier on the same pull request. (``eq=False`` because arrays
    have no single truth value.)
    """

    raw_confidence: FloatArray
    calibrated: FloatArray
    severity: IntArray
    is_security: BoolArray
    rule_alpha: FloatArray
    rule_beta: FloatArray
    category_acceptance: FloatArray
    noisy_rule: BoolArray
    threshold: FloatArray
    previously_dismissed: BoolArray
    fingerprints: Sequence[str]
    file_paths: Sequence[str]
    line_starts: IntArray
    rule_ids: Sequence[str]
    categories: Sequence[str]
    simhashes: npt.NDArray[np.uint64]

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"RankingInputs fields differ in length: {lengths}")

    @property
    def size(self) -> int:
        """Number of findings."""
        return len(self.raw_confidence)


@dataclass(frozen=True)
class RankingPolicy:
    """How to rank: result limit, diversity, exploration and which suppressions apply.

    ``suppress`` governs the learned filters (noisy rules, thresholds); ``deduplicate`` governs
    duplicate collapsing and the previously-dismissed check, independently of ``suppress``.
    ``mmr_window`` bounds the diversity re-ranking to the best that many shown findings.
    """

    max_results: int = 0
    diversity: float = 0.0
    exploration: bool = False
    seed: int = 0
    severity_weights: tuple[float, float, float, float, float] = (0.6, 0.8, 1.0, 1.2, 1.5)
    suppress: bool = True
    deduplicate: bool = True
    line_window: int = 10
    max_hamming: int = 6
    mmr_window: int = 500

    def __post_init__(self) -> None:
        if self.max_results < 0:
            raise ValueError("max_results must be >= 0 (0 means no limit)")
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError("diversity must lie in [0, 1]")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        weights = np.asarray(self.severity_weights, dtype=np.float64)
        if weights.shape != (5,) or not np.all(np.isfinite(weights) & (weights > 0)):
            raise ValueError("severity_weights must be five positive numbers")
        if self.line_window < 0 or self.max_hamming < 0:
            raise ValueError("line_window and max_hamming must be >= 0")
        if self.mmr_window < 1:
            raise ValueError("mmr_window must be >= 1")


@dataclass(frozen=True, eq=False)
class RankingResult:
    """The ranking of n findings; every array is indexed by input position except ``order``.

    ``order`` lists the shown findings in rank order, then the suppressed ones by score.
    ``rank`` is 1-based among shown findings and 0 for suppressed ones. ``reason`` is one of the
    ``REASON_*`` constants or "". ``duplicate_of`` is the input index of the finding a duplicate
    collapsed into (-1 otherwise) and ``duplicate_kind`` "exact", "near" or "". ``flagged``
    marks a critical security finding shown although a learned filter would have hidden it.
    ``diversity_penalty`` is the similarity term of the MMR objective in score units.
    ``explored`` marks findings scored with a Thompson sample instead of the posterior mean.
    """

    order: IntArray
    rank: IntArray
    score: FloatArray
    adjusted_probability: FloatArray
    rule_acceptance: FloatArray
    suppressed: BoolArray
    reason: ObjectArray
    duplicate_of: IntArray
    duplicate_kind: ObjectArray
    flagged: BoolArray
    diversity_penalty: FloatArray
    explored: BoolArray

    @property
    def size(self) -> int:
        """Number of findings."""
        return len(self.order)

    @property
    def shown(self) -> IntArray:
        """Input indices of the shown findings, in rank order."""
        shown: IntArray = self.order[: int(np.count_nonzero(~self.suppressed))]
        return shown


def pass_through(n: int) -> RankingResult:
    """The ranking used when learning is off: input order, nothing suppressed, no scores."""
    if n < 0:
        raise ValueError("n must be >= 0")
    order = np.arange(n, dtype=np.int64)
    nan = np.full(n, np.nan)
    return RankingResult(
        order=order,
        rank=order + 1,
        score=nan,
        adjusted_probability=nan.copy(),
        rule_acceptance=nan.copy(),
        suppressed=np.zeros(n, dtype=bool),
        reason=np.full(n, "", dtype=object),
        duplicate_of=np.full(n, -1, dtype=np.int64),
        duplicate_kind=np.full(n, "", dtype=object),
        flagged=np.zeros(n, dtype=bool),
        diversity_penalty=np.zeros(n),
        explored=np.zeros(n, dtype=bool),
    )


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    logit: FloatArray = np.log(clipped) - np.log1p(-clipped)
    return logit


def _sigmoid(x: FloatArray) -> FloatArray:
    # tanh form: no overflow warning for large |x| (filterwarnings = error in the tests).
    sigmoid: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * x))
    return sigmoid


def _finite(name: str, values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _codes(values: Sequence[str], index: IntArray) -> IntArray:
    """Dense ids of the strings at ``index``, equal ids for equal strings."""
    ids: dict[str, int] = {}
    return np.fromiter(
        (ids.setdefault(values[i], len(ids)) for i in index.tolist()),
        dtype=np.int64,
        count=index.size,
    )


def _by_score(indices: IntArray, score: FloatArray) -> IntArray:
    """``indices`` sorted by score, best first; ties keep input order (indices ascending)."""
    ordered: IntArray = indices[np.argsort(-score[indices], kind="stable")]
    return ordered


def _diversify(
    candidates: IntArray,
    *,
    inputs: RankingInputs,
    score: FloatArray,
    diversity: float,
    picks: int,
    cancel: CancelToken,
) -> tuple[IntArray, FloatArray]:
    """Greedy maximal marginal relevance over ``candidates`` (given best score first).

    Picks ``picks`` findings, each maximising (1-d)·score/top - d·(max similarity to the
    findings already picked); the unpicked candidates follow in score order. Returns the new
    order and each candidate's penalty d·similarity·top in score units (0 when not picked).
    The candidate-by-candidate similarity matrix is built once with broadcasting, so each pick
    costs three vector operations.
    """
    size = candidates.size
    top = float(score[candidates[0]])
    relevance = score[candidates] / top if top > 0 else np.zeros(size)
    rules = _codes(inputs.rule_ids, candidates)
    files = _codes(inputs.file_paths, candidates)
    categories = _codes(inputs.categories, candidates)
    weighted_similarity = diversity * (
        SIMILARITY_SAME_RULE * (rules[:, None] == rules[None, :])
        + SIMILARITY_SAME_FILE * (files[:, None] == files[None, :])
        + SIMILARITY_SAME_CATEGORY * (categories[:, None] == categories[None, :])
    )
    gain = (1.0 - diversity) * relevance
    penalty = np.zeros(size)
    objective = gain.copy()
    penalty_at_pick = np.zeros(size)
    picked = np.zeros(size, dtype=bool)
    sequence: list[int] = []
    for pick in range(picks):
        if pick % 64 == 0:
            cancel.check()
        best = int(np.argmax(objective))
        sequence.append(best)
        picked[best] = True
        penalty_at_pick[best] = penalty[best]
        # A picked finding's gain drops to -inf, so it can never be picked again.
        gain[best] = -np.inf
        np.maximum(penalty, weighted_similarity[best], out=penalty)
        np.subtract(gain, penalty, out=objective)
    rest = np.flatnonzero(~picked)
    new_order: IntArray = candidates[np.concatenate([np.asarray(sequence, dtype=np.int64), rest])]
    return new_order, penalty_at_pick * top


def rank_findings(
    inputs: RankingInputs, policy: RankingPolicy, cancel: CancelToken = NEVER_CANCELLED
) -> RankingResult:
    """Score, deduplicate, suppress and order one request's findings.

    Score: the calibrated probability lifted by how the rule fares against its category, in
    log-odds, ``sigmoid(logit(calibrated) + logit(rule) - logit(category))``, times the
    severity weight. The rule acceptance is the posterior mean, or with ``exploration`` one
    Thompson draw per finding (input order) from ``default_rng(seed)``, so equal inputs and
    seed rank equally.

    A finding gets the first applicable reason: previously_dismissed, duplicate, noisy_rule,
    below_threshold (raw confidence < threshold; NaN never suppresses), then over_limit for shown
    findings beyond ``max_results``. A critical security finding that only a learned filter
    (noisy_rule, below_threshold) would hide stays shown and is flagged instead.

    Duplicates are collapsed among the findings not previously dismissed. A group's
    representative is its best-scoring member that no learned filter hides (its best member when
    all are hidden): otherwise a duplicate could point at a finding that is itself hidden, and
    the problem it reports would vanish, even when it is a critical security finding.
    """
    n = inputs.size
    if n == 0:
        return pass_through(0)
    raw = _finite("raw_confidence", inputs.raw_confidence)
    calibrated = _finite("calibrated", inputs.calibrated)
    category_acceptance = _finite("category_acceptance", inputs.category_acceptance)
    alpha = _finite("rule_alpha", inputs.rule_alpha)
    beta = _finite("rule_beta", inputs.rule_beta)
    if np.any(alpha <= 0) or np.any(beta <= 0):
        raise ValueError("rule_alpha and rule_beta must be positive")
    severity = np.asarray(inputs.severity, dtype=np.int64)
    if np.any((severity < 1) | (severity > 5)):
        raise ValueError("severity must lie in 1..5")
    threshold = np.asarray(inputs.threshold, dtype=np.float64)
    is_security = np.asarray(inputs.is_security, dtype=bool)
    noisy_rule = np.asarray(inputs.noisy_rule, dtype=bool)
    previously_dismissed = np.asarray(inputs.previously_dismissed, dtype=bool)

    if policy.exploration:
        rng = np.random.default_rng(policy.seed)
        rule_acceptance: FloatArray = rng.beta(alpha, beta)
        explored = np.ones(n, dtype=bool)
    else:
        rule_acceptance = alpha / (alpha + beta)
        explored = np.zeros(n, dtype=bool)
    adjusted = _sigmoid(_logit(calibrated) + _logit(rule_acceptance) - _logit(category_acceptance))
    score = adjusted * np.asarray(policy.severity_weights, dtype=np.float64)[severity - 1]

    critical_security = is_security & (severity == SEVERITY_CRITICAL)
    if policy.suppress:
        noisy = noisy_rule
        # NaN thresholds compare False, so "no threshold" never suppresses.
        below = np.less(raw, threshold, where=~np.isnan(threshold), out=np.zeros(n, dtype=bool))
    else:
        noisy = below = np.zeros(n, dtype=bool)
    filtered = (noisy | below) & ~critical_security

    suppressed = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    duplicate_kind = np.full(n, "", dtype=object)
    if policy.deduplicate:
        suppressed[previously_dismissed] = True
        reason[previously_dismissed] = REASON_PREVIOUSLY_DISMISSED
        candidates = np.flatnonzero(~previously_dismissed)
        if candidates.size > 1:
            everyone = candidates.size == n
            # Any unfiltered member outranks every filtered one; score decides within each set.
            lift = float(np.max(score) - np.min(score)) + 1.0
            priority = score[candidates] + np.where(filtered[candidates], 0.0, lift)
            groups = find_duplicates(
                fingerprints=inputs.fingerprints
                if everyone
                else [inputs.fingerprints[i] for i in candidates.tolist()],
                file_paths=inputs.file_paths
                if everyone
                else [inputs.file_paths[i] for i in candidates.tolist()],
                line_starts=np.asarray(inputs.line_starts, dtype=np.int64)[candidates],
                simhashes=np.asarray(inputs.simhashes, dtype=np.uint64)[candidates],
                priority=priority,
                line_window=policy.line_window,
                max_hamming=policy.max_hamming,
                cancel=cancel,
            )
            is_member = groups.duplicate_of >= 0
            members = candidates[is_member]
            suppressed[members] = True
            reason[members] = REASON_DUPLICATE
            duplicate_of[members] = candidates[groups.duplicate_of[is_member]]
            duplicate_kind[members] = groups.kind[is_member]

    open_ = ~suppressed
    noisy_hit = open_ & noisy & ~critical_security
    reason[noisy_hit] = REASON_NOISY_RULE
    below_hit = open_ & ~noisy_hit & below & ~critical_security
    reason[below_hit] = REASON_BELOW_THRESHOLD
    suppressed |= noisy_hit | below_hit
    flagged = open_ & (noisy | below) & critical_security

    shown = _by_score(np.flatnonzero(~suppressed), score)
    diversity_penalty = np.zeros(n)
    if policy.diversity > 0 and shown.size > 1:
        window = min(policy.mmr_window, shown.size)
        picks = window if policy.max_results == 0 else min(window, policy.max_results)
        head, head_penalty = _diversify(
            shown[:window],
            inputs=inputs,
            score=score,
            diversity=policy.diversity,
            picks=picks,
            cancel=cancel,
        )
        diversity_penalty[shown[:window]] = head_penalty
        shown = np.concatenate([head, shown[window:]])

    if 0 < policy.max_results < shown.size:
        cut = shown[policy.max_results :]
        shown = shown[: policy.max_results]
        suppressed[cut] = True
        reason[cut] = REASON_OVER_LIMIT
        # "flagged" means shown despite a filter; a finding over the limit is not shown.
        flagged[cut] = False

    rank = np.zeros(n, dtype=np.int64)
    rank[shown] = np.arange(1, shown.size + 1, dtype=np.int64)
    order = np.concatenate([shown, _by_score(np.flatnonzero(suppressed), score)])
    return RankingResult(
        order=order,
        rank=rank,
        score=score,
        adjusted_probability=adjusted,
        rule_acceptance=rule_acceptance,
        suppressed=suppressed,
        reason=reason,
        duplicate_of=duplicate_of,
        duplicate_kind=duplicate_kind,
        flagged=flagged,
        diversity_penalty=diversity_penalty,
        explored=explored,
    )
