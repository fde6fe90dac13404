"""The pure core of RankSuggestions: order, deduplicate and hide one review's findings.

The use case predicts each finding's P(acted on) with the learned model and decides which ones
the record says to hide (``domain.suppression``); everything here is a deterministic function of
those arrays and a :class:`RankingPolicy`.

The score is the *expected value* of showing a finding: P(acted on) × the severity's value
(all 1 by default, so the score is the probability itself; configure larger values for severer
findings to rank them up at equal probability). ``calibrated_probability`` is always the
probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.learning.domain.cancellation import NEVER_CANCELLED, CancelToken
from services.learning.domain.dedup import find_duplicates
from services.learning.domain.model import sigmoid
from services.learning.domain.suppression import BELOW_FLOOR, PROBATION

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

REASON_BELOW_FLOOR = BELOW_FLOOR
REASON_PROBATION = PROBATION
REASON_DUPLICATE = "duplicate"
REASON_PREVIOUSLY_DISMISSED = "previously_dismissed"
REASON_OVER_LIMIT = "over_limit"
SUPPRESSION_REASONS = (
    REASON_BELOW_FLOOR,
    REASON_DUPLICATE,
    REASON_PREVIOUSLY_DISMISSED,
    REASON_PROBATION,
    REASON_OVER_LIMIT,
)
LEARNED_REASONS = frozenset({REASON_BELOW_FLOOR, REASON_PROBATION})
"""Reasons that come from what was learned (the others are about this request)."""

SEVERITY_CRITICAL = 5
SIMILARITY_SAME_RULE = 0.6
SIMILARITY_SAME_FILE = 0.25
SIMILARITY_SAME_CATEGORY = 0.15


@dataclass(frozen=True, eq=False)
class RankingInputs:
    """Per-finding inputs of one ranking request; every field has one entry per finding.

    ``probability`` is the calibrated P(acted on), ``logit`` and ``logit_sd`` its log-odds and
    their standard error (what exploration samples from). ``hide_reason`` is the learned
    filter's verdict (``domain.suppression``: BELOW_FLOOR, PROBATION or ""), before the
    critical-security exemption, which is applied here. ``previously_dismissed`` marks findings
    whose fingerprint was dismissed or rejected earlier on the same pull request.
    """

    probability: FloatArray
    logit: FloatArray
    logit_sd: FloatArray
    severity: IntArray
    is_security: BoolArray
    hide_reason: ObjectArray
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
        return len(self.probability)


@dataclass(frozen=True)
class RankingPolicy:
    """How to rank: result limit, diversity, exploration and which suppressions apply.

    ``suppress`` governs the learned filters; ``deduplicate`` governs duplicate collapsing and
    the previously-dismissed check, independently of ``suppress``. ``mmr_window`` bounds the
    diversity re-ranking to the best that many shown findings.
    """

    max_results: int = 0
    diversity: float = 0.0
    exploration: bool = False
    seed: int = 0
    severity_values: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
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
        values = np.asarray(self.severity_values, dtype=np.float64)
        if values.shape != (5,) or not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError("severity_values must be five positive numbers")
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
    ``explored`` marks findings scored with a Thompson sample instead of the estimate.
    """

    order: IntArray
    rank: IntArray
    score: FloatArray
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

    @property
    def hidden_by_learning(self) -> BoolArray:
        """Findings a learned filter hid (not duplicates, earlier dismissals or the limit)."""
        return np.isin(self.reason, list(LEARNED_REASONS)) & self.suppressed


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
        suppressed=np.zeros(n, dtype=bool),
        reason=np.full(n, "", dtype=object),
        duplicate_of=np.full(n, -1, dtype=np.int64),
        duplicate_kind=np.full(n, "", dtype=object),
        flagged=np.zeros(n, dtype=bool),
        diversity_penalty=np.zeros(n),
        explored=np.zeros(n, dtype=bool),
    )


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

    Score: P(acted on) × the severity's value; with ``exploration``, P is replaced by one
    Thompson draw per finding (input order) from its posterior, sigmoid(logit + sd·N(0, 1)),
    with ``default_rng(seed)``, so equal inputs and seed rank equally.

    A finding gets the first applicable reason: previously_dismissed, duplicate, then its
    learned ``hide_reason`` (below_floor, probation), then over_limit for shown findings beyond
    ``max_results``. A critical security finding that only a learned filter would hide stays
    shown and is flagged instead.

    Duplicates are collapsed among the findings not previously dismissed. A group's
    representative is its best-scoring member that no learned filter hides (its best member when
    all are hidden): otherwise a duplicate could point at a finding that is itself hidden, and
    the problem it reports would vanish, even when it is a critical security finding.
    """
    n = inputs.size
    if n == 0:
        return pass_through(0)
    probability = _finite("probability", inputs.probability)
    logit = _finite("logit", inputs.logit)
    logit_sd = _finite("logit_sd", inputs.logit_sd)
    if np.any((probability < 0) | (probability > 1)):
        raise ValueError("probability must lie in [0, 1]")
    if np.any(logit_sd < 0):
        raise ValueError("logit_sd must be non-negative")
    severity = np.asarray(inputs.severity, dtype=np.int64)
    if np.any((severity < 1) | (severity > 5)):
        raise ValueError("severity must lie in 1..5")
    hide_reason = np.asarray(inputs.hide_reason, dtype=object)
    if not set(hide_reason.tolist()) <= {"", *LEARNED_REASONS}:
        raise ValueError("hide_reason must be below_floor, probation or empty")
    is_security = np.asarray(inputs.is_security, dtype=bool)
    previously_dismissed = np.asarray(inputs.previously_dismissed, dtype=bool)

    if policy.exploration:
        rng = np.random.default_rng(policy.seed)
        value = sigmoid(logit + logit_sd * rng.standard_normal(n))
        explored = np.ones(n, dtype=bool)
    else:
        value = probability
        explored = np.zeros(n, dtype=bool)
    score = value * np.asarray(policy.severity_values, dtype=np.float64)[severity - 1]

    critical_security = is_security & (severity == SEVERITY_CRITICAL)
    learned = (hide_reason != "") if policy.suppress else np.zeros(n, dtype=bool)
    filtered = learned & ~critical_security

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
    hit = open_ & filtered
    reason[hit] = hide_reason[hit]
    suppressed |= hit
    flagged = open_ & learned & critical_security

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
        suppressed=suppressed,
        reason=reason,
        duplicate_of=duplicate_of,
        duplicate_kind=duplicate_kind,
        flagged=flagged,
        diversity_penalty=diversity_penalty,
        explored=explored,
    )
