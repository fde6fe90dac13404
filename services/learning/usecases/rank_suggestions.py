"""RankSuggestions: gather a review's findings and the learned state, rank, explain."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.cancellation import Cancelled, CancelToken
from services.learning.domain.dedup import simhash64
from services.learning.domain.learned_state import LearnedModel
from services.learning.domain.ranking import (
    RankingInputs,
    RankingPolicy,
    pass_through,
    rank_findings,
)
from services.learning.domain.scopes import Dimension
from services.learning.gates import LearningGate
from services.learning.instruments import LearningInstruments
from services.learning.model_cache import ModelStore
from services.learning.storage.learning_repository import LearningRepository
from shared.errors import Violations
from shared.finding_input import FindingDraft, Limits, check_text, validate_finding
from shared.fingerprint import finding_fingerprint

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    """One finding to rank, registered (finding_id > 0) or inline."""

    index: int
    finding_id: int
    client_finding_id: str
    rule_id: str
    category: str
    severity: int
    confidence: float
    file_path: str
    line_start: int
    message: str
    fingerprint: str


@dataclass(frozen=True)
class RankOptions:
    max_results: int = 0
    diversity: float = 0.0
    exploration: bool = False
    seed: int = 0


@dataclass(frozen=True)
class RankRequest:
    repository_url: str
    pull_request: int
    finding_ids: tuple[int, ...]
    inline: tuple[FindingDraft, ...]
    options: RankOptions


@dataclass(frozen=True)
class ItemProblem:
    index: int
    code: int
    reason: str
    message: str


@dataclass(frozen=True)
class Explanations:
    """The numbers behind every score, as columns indexed like the candidates."""

    calibration_source: list[str]
    severity_weight: list[float]
    rule_acceptance: list[float]
    category_acceptance: list[float]
    adjusted_probability: list[float]
    threshold: list[float]
    threshold_source: list[str]
    diversity_penalty: list[float]
    explored: list[bool]


@dataclass(frozen=True)
class RankOutcome:
    """A ranking as columns indexed like ``candidates``; ``order`` lists them shown-first.

    Columns rather than an object per finding: a 10,000-finding request would otherwise spend
    more time building objects than ranking.
    """

    candidates: tuple[Candidate, ...]
    order: list[int]
    rank: list[int]
    score: list[float]
    calibrated: list[float]
    suppressed: list[bool]
    reason: list[str]
    duplicate_of: list[int]
    flagged: list[bool]
    explanations: Explanations | None
    learning_applied: bool
    not_applied_reason: str
    model_version: str
    problems: tuple[ItemProblem, ...] = field(default=())

    def detail(self, i: int) -> str:
        """Why candidate ``i`` was suppressed, in words ("" when shown)."""
        reason, candidate = self.reason[i], self.candidates[i]
        if reason == "below_threshold" and self.explanations is not None:
            threshold = self.explanations.threshold[i]
            return (
                f"confidence {candidate.confidence:.2f} < {candidate.category} "
                f"threshold {threshold:.2f}"
            )
        if reason == "duplicate" and self.duplicate_of[i] >= 0:
            return f"duplicate of request finding {self.candidates[self.duplicate_of[i]].index}"
        return _REASON_TEXT.get(reason, "").format(rule=candidate.rule_id)


_REASON_TEXT = {
    "previously_dismissed": "already dismissed or rejected on this pull request",
    "noisy_rule": "rule {rule} is statistically often ignored or rejected",
    "over_limit": "ranked below max_results",
}


@lru_cache(maxsize=65_536)
def _simhash_of(message: str) -> int:
    # Bots repeat their messages: hashing each distinct text once keeps big requests cheap.
    return int(simhash64([message])[0])


def validate_request(request: RankRequest, *, limits: Limits, max_findings: int) -> None:
    violations = Violations()
    check_text(
        violations,
        "repository_url",
        request.repository_url,
        max_chars=limits.max_url_chars,
        required=True,
    )
    if request.pull_request < 0:
        violations.add("pull_request", "must not be negative")
    total = len(request.finding_ids) + len(request.inline)
    if total == 0:
        violations.add("finding_ids", "give finding ids or inline findings to rank")
    elif total > max_findings:
        violations.add("findings", f"{total} findings; at most {max_findings} per request")
    for i, finding_id in enumerate(request.finding_ids[:max_findings]):
        if finding_id <= 0:
            violations.add(f"finding_ids[{i}]", "must be a positive finding id")
    if total <= max_findings:
        for i, draft in enumerate(request.inline):
            validate_finding(draft, f"findings[{i}]", limits, violations)
    options = request.options
    if not math.isfinite(options.diversity) or not 0.0 <= options.diversity <= 1.0:
        violations.add("options.diversity", f"must be within [0, 1], got {options.diversity}")
    if options.max_results < 0:
        violations.add("options.max_results", "must not be negative")
    violations.raise_if_any()


class SuggestionRanker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: ModelStore,
        gate: LearningGate,
        instruments: LearningInstruments,
        limits: Limits,
        max_findings: int,
        severity_weights: tuple[float, float, float, float, float],
        line_window: int,
        max_hamming: int,
        executor: Executor,
    ) -> None:
        self._sessions = sessions
        self._executor = executor
        self._models = models
        self._gate = gate
        self._instruments = instruments
        self._limits = limits
        self._max_findings = max_findings
        self._severity_weights = severity_weights
        self._line_window = line_window
        self._max_hamming = max_hamming

    async def rank(
        self, request: RankRequest, *, time_remaining: float | None = None
    ) -> RankOutcome:
        """Ranks one request; the CPU-heavy steps run on the ranking threads, so the event loop
        (health checks, other calls) stays responsive, and they stop as soon as the caller gives
        up (cancellation) or ``time_remaining`` seconds have passed."""
        token = CancelToken(timeout=time_remaining)
        try:
            return await self._rank_request(request, token)
        except asyncio.CancelledError:
            token.cancel()
            raise
        except Cancelled:
            # The deadline passed in a worker before gRPC cancelled the call: same outcome.
            raise asyncio.CancelledError from None

    async def _offload(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _rank_request(self, request: RankRequest, token: CancelToken) -> RankOutcome:
        started = time.perf_counter()
        await self._offload(
            partial(validate_request, request, limits=self._limits, max_findings=self._max_findings)
        )
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            repository = await repo.repository(request.repository_url)
            candidates, problems = await self._candidates(repo, request, repository)
            gate = await self._gate.check(feature="ranking", repository_url=request.repository_url)
            dismissed: set[str] = set()
            if gate.enabled and repository is not None and request.pull_request > 0:
                dismissed = await repo.dismissed_fingerprints(
                    repository_id=repository[0],
                    pull_request=request.pull_request,
                    fingerprints=[c.fingerprint for c in candidates],
                )
        if not gate.enabled:
            outcome = _pass_through_outcome(candidates, problems, gate.reason)
        else:
            model = await self._models.current()
            outcome = await self._offload(
                partial(
                    self._rank, model, candidates, problems, request, repository, dismissed, token
                )
            )
        seconds = time.perf_counter() - started
        self._instruments.ranking_duration.record(
            seconds, {"learning_applied": outcome.learning_applied}
        )
        self._instruments.diversity_factor.record(request.options.diversity)
        return outcome

    async def _candidates(
        self, repo: LearningRepository, request: RankRequest, repository: tuple[int, int] | None
    ) -> tuple[list[Candidate], list[ItemProblem]]:
        records = await repo.findings(request.finding_ids)
        candidates: list[Candidate] = []
        problems: list[ItemProblem] = []
        for index, finding_id in enumerate(request.finding_ids):
            record = records.get(finding_id)
            if record is None:
                problems.append(
                    ItemProblem(index, 5, "FINDING_NOT_FOUND", f"no finding {finding_id}")
                )
                continue
            if repository is None or record.repository_id != repository[0]:
                problems.append(
                    ItemProblem(
                        index,
                        9,
                        "FINDING_OF_ANOTHER_REPOSITORY",
                        f"finding {finding_id} was not recorded for {request.repository_url}",
                    )
                )
                continue
            candidates.append(
                Candidate(
                    index,
                    finding_id,
                    record.client_finding_id or "",
                    record.rule_id,
                    record.category,
                    record.severity,
                    record.confidence,
                    record.file_path,
                    record.line_start,
                    record.message,
                    record.fingerprint,
                )
            )
        offset = len(request.finding_ids)
        for position, draft in enumerate(request.inline):
            fingerprint = finding_fingerprint(
                rule_id=draft.rule_id,
                file_path=draft.file_path,
                message=draft.message,
                code_context=draft.code_context,
            )
            candidates.append(
                Candidate(
                    offset + position,
                    0,
                    draft.client_finding_id or "",
                    draft.rule_id,
                    draft.category,
                    draft.severity,
                    draft.confidence,
                    draft.file_path,
                    draft.line_start,
                    draft.message,
                    fingerprint,
                )
            )
        return candidates, problems

    def _rank(
        self,
        model: LearnedModel,
        candidates: Sequence[Candidate],
        problems: Sequence[ItemProblem],
        request: RankRequest,
        repository: tuple[int, int] | None,
        dismissed: set[str],
        token: CancelToken,
    ) -> RankOutcome:
        n = len(candidates)
        chain = model.scopes_of(repository[0] if repository else None)
        confidence = np.fromiter((c.confidence for c in candidates), dtype=np.float64, count=n)
        severity = np.fromiter((c.severity for c in candidates), dtype=np.int64, count=n)
        categories = [c.category for c in candidates]
        rules = [c.rule_id for c in candidates]

        calibrated = np.empty(n)
        calibration_source = np.empty(n, dtype=object)
        threshold = np.empty(n)
        threshold_source = np.empty(n, dtype=object)
        category_acceptance = np.empty(n)
        for category, members in _group(categories).items():
            curve, source = model.curve_for(category, chain)
            calibrated[members] = curve.predict(confidence[members])
            calibration_source[members] = source
            threshold[members], threshold_source[members] = model.threshold_for(category, chain)
            alpha, beta = model.usefulness(Dimension.CATEGORY, category, chain)
            category_acceptance[members] = alpha / (alpha + beta)
        rule_alpha = np.empty(n)
        rule_beta = np.empty(n)
        noisy = np.zeros(n, dtype=bool)
        for rule, members in _group(rules).items():
            rule_alpha[members], rule_beta[members] = model.usefulness(Dimension.RULE, rule, chain)
            noisy[members] = rule in model.noisy_rules

        options = request.options
        inputs = RankingInputs(
            raw_confidence=confidence,
            calibrated=np.clip(calibrated, 0.0, 1.0),
            severity=severity,
            is_security=np.array([c == "security" for c in categories], dtype=bool),
            rule_alpha=rule_alpha,
            rule_beta=rule_beta,
            category_acceptance=np.clip(category_acceptance, 1e-4, 1 - 1e-4),
            noisy_rule=noisy,
            threshold=threshold,
            previously_dismissed=np.array(
                [c.fingerprint in dismissed for c in candidates], dtype=bool
            ),
            fingerprints=[c.fingerprint for c in candidates],
            file_paths=[c.file_path for c in candidates],
            line_starts=np.fromiter((c.line_start for c in candidates), dtype=np.int64, count=n),
            rule_ids=rules,
            categories=categories,
            simhashes=np.fromiter(
                (_simhash_of(c.message) for c in candidates), dtype=np.uint64, count=n
            ),
        )
        policy = RankingPolicy(
            max_results=options.max_results,
            diversity=options.diversity,
            exploration=options.exploration,
            seed=options.seed,
            severity_weights=self._severity_weights,
            line_window=self._line_window,
            max_hamming=self._max_hamming,
        )
        result = rank_findings(inputs, policy, token)
        weights = np.asarray(self._severity_weights)[severity - 1]
        duplicates = int(np.count_nonzero(result.duplicate_of >= 0))
        if duplicates:
            self._instruments.deduplication_hits.add(duplicates)
        shown = result.score[~result.suppressed]
        if shown.size:
            self._instruments.last_average_score = float(shown.mean())
        return RankOutcome(
            candidates=tuple(candidates),
            order=result.order.tolist(),
            rank=result.rank.tolist(),
            score=result.score.tolist(),
            calibrated=calibrated.tolist(),
            suppressed=result.suppressed.tolist(),
            reason=result.reason.tolist(),
            duplicate_of=result.duplicate_of.tolist(),
            flagged=result.flagged.tolist(),
            explanations=Explanations(
                calibration_source=calibration_source.tolist(),
                severity_weight=weights.tolist(),
                rule_acceptance=result.rule_acceptance.tolist(),
                category_acceptance=category_acceptance.tolist(),
                adjusted_probability=result.adjusted_probability.tolist(),
                threshold=threshold.tolist(),
                threshold_source=threshold_source.tolist(),
                diversity_penalty=result.diversity_penalty.tolist(),
                explored=result.explored.tolist(),
            ),
            learning_applied=True,
            not_applied_reason="",
            model_version=model.version,
            problems=tuple(problems),
        )


def _group(keys: Sequence[str]) -> dict[str, npt.NDArray[np.intp]]:
    unique, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    return {str(key): np.flatnonzero(inverse == i) for i, key in enumerate(unique)}


def _pass_through_outcome(
    candidates: Sequence[Candidate], problems: Sequence[ItemProblem], reason: str
) -> RankOutcome:
    result = pass_through(len(candidates))
    n = len(candidates)
    return RankOutcome(
        candidates=tuple(candidates),
        order=result.order.tolist(),
        rank=result.rank.tolist(),
        score=[math.nan] * n,
        calibrated=[math.nan] * n,
        suppressed=[False] * n,
        reason=[""] * n,
        duplicate_of=[-1] * n,
        flagged=[False] * n,
        explanations=None,
        learning_applied=False,
        not_applied_reason=reason,
        model_version="",
        problems=tuple(problems),
    )
