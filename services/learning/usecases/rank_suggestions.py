"""RankSuggestions: gather a review's findings, predict, decide what to hide, rank, explain."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from services.learning.domain.cancellation import Cancelled, CancelToken
from services.learning.domain.dedup import simhash64
from services.learning.domain.features import FindingFeatures, FloatArray, ObjectArray
from services.learning.domain.learned_state import LearnedState
from services.learning.domain.model import Prediction
from services.learning.domain.ranking import (
    REASON_BELOW_FLOOR,
    REASON_DUPLICATE,
    REASON_PROBATION,
    RankingInputs,
    RankingPolicy,
    pass_through,
    rank_findings,
)
from services.learning.domain.suppression import SuppressionPolicy
from services.learning.gates import GateDecision
from services.learning.instruments import LearningInstruments
from services.learning.storage.ranking_repository import FindingRecord
from services.learning.storage.transactions import Transaction
from shared.errors import Violations
from shared.finding_input import FindingDraft, Limits, check_text, validate_finding
from shared.fingerprint import finding_fingerprints

T = TypeVar("T")


class RankingStore(Protocol):
    async def repository(self, url: str) -> tuple[int, int] | None: ...
    async def findings(self, finding_ids: Sequence[int]) -> dict[int, FindingRecord]: ...
    async def dismissed_fingerprints(
        self, *, repository_id: int, pull_request: int, fingerprints: Sequence[str]
    ) -> set[str]: ...


class StateSource(Protocol):
    async def current(self) -> LearnedState: ...


class Gate(Protocol):
    async def check(self, *, feature: str, repository_url: str) -> GateDecision: ...


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


Row = TypeVar("Row")


class _Columns(Sequence[Row]):
    """Rows held as one list per field (a subclass is a dataclass of those lists); ``rows[i]``
    makes row i on demand. Columns rather than an object per row, because a 10,000-finding
    request would otherwise spend more time building objects than ranking."""

    _row: ClassVar[Callable[..., Any]]
    """The row type, a dataclass."""
    _names: ClassVar[tuple[str, ...]]
    """The columns, in the order of the row type's fields."""

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Self:
        if isinstance(rows, cls):
            return rows
        fields = tuple(cast(Any, cls._row).__dataclass_fields__)
        table = [tuple(getattr(row, name) for name in fields) for row in rows]
        return cast(Callable[..., Self], cls)(*_columns(table, len(fields)))

    def __len__(self) -> int:
        return len(getattr(self, self._names[0]))

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | Sequence[Row]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        row: Row = self._row(*(getattr(self, name)[i] for name in self._names))
        return row


@dataclass(frozen=True, eq=False)
class Candidates(_Columns[Candidate]):
    """The findings to rank as columns, one entry per finding; ``candidates[i]`` is a
    :class:`Candidate`."""

    _row = Candidate
    _names = ("request_index", *tuple(Candidate.__dataclass_fields__)[1:])

    request_index: list[int]
    """``Candidate.index`` (named apart from ``Sequence.index``)."""
    finding_id: list[int]
    client_finding_id: list[str]
    rule_id: list[str]
    category: list[str]
    severity: list[int]
    confidence: list[float]
    file_path: list[str]
    line_start: list[int]
    message: list[str]
    fingerprint: list[str]

    def __add__(self, other: Candidates) -> Candidates:
        return Candidates(*(getattr(self, n) + getattr(other, n) for n in self._names))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to columns (``width`` empty columns for no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


@dataclass(frozen=True, eq=False)
class InlineFindings(_Columns[FindingDraft]):
    """A request's inline findings as columns (``findings[i]`` is a :class:`FindingDraft`): the
    request is converted, validated and fingerprinted column by column."""

    _row = FindingDraft
    _names = tuple(FindingDraft.__dataclass_fields__)

    client_finding_id: list[str | None]
    rule_id: list[str]
    category: list[str]
    severity: list[int]
    confidence: list[float]
    file_path: list[str]
    line_start: list[int]
    line_end: list[int]
    title: list[str]
    message: list[str]
    suggested_fix: list[str]
    code_context: list[str]


@dataclass(frozen=True)
class RankOptions:
    max_results: int = 0
    diversity: float = 0.0
    exploration: bool = False
    seed: int = 0
    explain: bool = True
    """Whether the answer carries each finding's explanation (the lean answer does not)."""


@dataclass(frozen=True)
class RankingSwitches:
    """Which learned behaviours the gates leave on for one request's repository (with learning
    and ranking on). Off means: nothing hidden by a learned filter (suppression), no duplicate
    collapsing or earlier-dismissal check (deduplication), no Thompson sampling even when asked
    (exploration), the model's uncalibrated log-odds (calibration)."""

    suppression: bool = True
    deduplication: bool = True
    exploration: bool = True
    calibration: bool = True


SWITCHED_FEATURES = ("suppression", "deduplication", "exploration", "calibration")


@dataclass(frozen=True)
class RankRequest:
    repository_url: str
    pull_request: int
    finding_ids: tuple[int, ...]
    inline: Sequence[FindingDraft]
    """Usually :class:`InlineFindings` (columns, as the request converter makes them)."""
    options: RankOptions


@dataclass(frozen=True)
class ItemProblem:
    index: int
    code: int
    reason: str
    message: str


@dataclass(frozen=True, eq=False)
class Explanations:
    """The model's account of every score, indexed like the candidates.

    ``prediction`` holds each finding's per-term contributions (summing to its logit) and the
    term columns behind them; ``state`` is the learned state they came from, for the evidence
    counts and the names of the terms.
    """

    prediction: Prediction
    state: LearnedState
    upper: list[float]
    floor: list[float]
    probation_evidence: list[str]
    diversity_penalty: list[float]
    explored: list[bool]
    severity_value: list[float]


@dataclass(frozen=True)
class RankOutcome:
    """A ranking as columns indexed like ``candidates``; ``order`` lists them shown-first.

    Columns rather than an object per finding: a 10,000-finding request would otherwise spend
    more time building objects than ranking. ``hidden`` counts the findings a learned filter
    hid and ``expected_useful_hidden`` the sum of their P(acted on): how many of them developers
    would have been expected to act on.
    """

    candidates: Sequence[Candidate]
    """Usually :class:`Candidates` (columns)."""
    order: list[int]
    rank: list[int]
    score: list[float]
    probability: list[float]
    suppressed: list[bool]
    reason: list[str]
    duplicate_of: list[int]
    flagged: list[bool]
    explanations: Explanations | None
    learning_applied: bool
    not_applied_reason: str
    model_version: str
    hidden: int = 0
    expected_useful_hidden: float = 0.0
    problems: tuple[ItemProblem, ...] = field(default=())

    def detail(self, i: int) -> str:
        """Why candidate ``i`` was suppressed, in words ("" when shown)."""
        reason, candidates = self.reason[i], self.candidates
        e = self.explanations
        if reason == REASON_BELOW_FLOOR and e is not None:
            return (
                f"even the upper bound of P(acted on), {e.upper[i]:.3f}, is below the hiding "
                f"floor {e.floor[i]:.3f}"
            )
        if reason == REASON_PROBATION and e is not None:
            rule = _column(candidates, "rule_id", i)
            return (
                f"rule {rule} is on probation in this {e.probation_evidence[i]} "
                f"and P(acted on) {self.probability[i]:.3f} is below the hiding floor "
                f"{e.floor[i]:.3f}"
            )
        if reason == REASON_DUPLICATE and self.duplicate_of[i] >= 0:
            index = _column(candidates, "request_index", self.duplicate_of[i])
            return f"duplicate of request finding {index}"
        return _REASON_TEXT.get(reason, "")


def _column(candidates: Sequence[Candidate], name: str, i: int) -> Any:
    """Candidate i's field ``name`` (a column of :class:`Candidates`), without making it."""
    if isinstance(candidates, Candidates):
        return getattr(candidates, name)[i]
    return getattr(candidates[i], "index" if name == "request_index" else name)


_REASON_TEXT = {
    "previously_dismissed": "already dismissed or rejected on this pull request",
    "over_limit": "ranked below max_results",
}


_SIMHASHES: dict[str, int] = {}
_SIMHASHES_KEPT = 65_536


def _simhashes(messages: Sequence[str]) -> npt.NDArray[np.uint64]:
    """The messages' SimHashes. Bots repeat their messages, so each distinct text is hashed once
    and kept (up to ``_SIMHASHES_KEPT`` texts; then the cache starts over); the texts not seen
    before are hashed together in one vectorised call."""
    known = {m: _SIMHASHES.get(m) for m in messages}
    missing = [m for m, h in known.items() if h is None]
    if missing:
        if len(_SIMHASHES) + len(missing) > _SIMHASHES_KEPT:
            _SIMHASHES.clear()
        for message, value in zip(missing, simhash64(missing).tolist(), strict=True):
            known[message] = _SIMHASHES[message] = value
    return np.fromiter((known[m] for m in messages), dtype=np.uint64, count=len(messages))


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
    if total <= max_findings and not _surely_valid(InlineFindings.of(request.inline), limits):
        # Only a request with a problem pays for the per-finding checks that name it.
        for i, draft in enumerate(request.inline):
            validate_finding(draft, f"findings[{i}]", limits, violations)
    options = request.options
    if not math.isfinite(options.diversity) or not 0.0 <= options.diversity <= 1.0:
        violations.add("options.diversity", f"must be within [0, 1], got {options.diversity}")
    if options.max_results < 0:
        violations.add("options.max_results", "must not be negative")
    violations.raise_if_any()


def _surely_valid(findings: InlineFindings, limits: Limits) -> bool:
    """True when no finding breaks a rule of ``validate_finding`` (checked column by column);
    False when one may, and the per-finding checks must say which."""
    if not findings:
        return True

    def fits(column: Sequence[str], max_chars: int, *, required: bool = False) -> bool:
        if required and not all(map(str.strip, column)):
            return False
        return max(map(len, column)) <= max_chars and "\x00" not in "".join(column)

    ids = [v for v in findings.client_finding_id if v is not None]
    confidence = np.asarray(findings.confidence, dtype=np.float64)
    severity = np.asarray(findings.severity, dtype=np.int64)
    line_start = np.asarray(findings.line_start, dtype=np.int64)
    categories = set(findings.category)
    return bool(
        (not ids or fits(ids, limits.max_id_chars))
        and fits(findings.rule_id, limits.max_id_chars, required=True)
        and fits(list(categories), limits.max_category_chars, required=True)
        and all(c == c.strip().lower() for c in categories)
        and np.all((severity >= 1) & (severity <= 5))
        and np.all((confidence >= 0.0) & (confidence <= 1.0))
        and fits(findings.file_path, limits.max_path_chars, required=True)
        and np.all(line_start >= 0)
        and np.all(np.asarray(findings.line_end, dtype=np.int64) >= line_start)
        and fits(findings.title, limits.max_title_chars)
        and fits(findings.message, limits.max_text_chars, required=True)
        and fits(findings.suggested_fix, limits.max_text_chars)
        and fits(findings.code_context, limits.max_text_chars)
    )


@dataclass(frozen=True)
class RankingSettings:
    limits: Limits
    max_findings: int
    severity_values: tuple[float, float, float, float, float]
    line_window: int
    max_hamming: int
    suppression: SuppressionPolicy
    threshold_suppression: bool = False
    """Also hide findings whose upper bound is below their category's certified ("own")
    threshold in this repository or team; off by default (see domain.threshold_fitting)."""


class RankSuggestions:
    def __init__(
        self,
        *,
        transaction: Transaction[RankingStore],
        state: StateSource,
        gate: Gate,
        instruments: LearningInstruments,
        settings: RankingSettings,
        executor: Executor,
    ) -> None:
        self._transaction = transaction
        self._state = state
        self._gate = gate
        self._instruments = instruments
        self._settings = settings
        self._executor = executor

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
            self._instruments.rankings_abandoned.add(1)
            raise asyncio.CancelledError from None

    async def _offload(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _rank_request(self, request: RankRequest, token: CancelToken) -> RankOutcome:
        started = time.perf_counter()
        settings = self._settings
        inline = await self._offload(partial(_prepare_inline, request, settings, token))
        async with self._transaction() as store:
            repository = await store.repository(request.repository_url)
            records = await store.findings(request.finding_ids)
            candidates, problems = _candidates(request, records, repository, inline)
            gate = await self._gate.check(feature="ranking", repository_url=request.repository_url)
            switches = await self._switches(request.repository_url) if gate.enabled else None
            dismissed: set[str] = set()
            if (
                switches is not None
                and switches.deduplication
                and repository is not None
                and request.pull_request > 0
            ):
                dismissed = await store.dismissed_fingerprints(
                    repository_id=repository[0],
                    pull_request=request.pull_request,
                    fingerprints=candidates.fingerprint,  # the column: no Candidate each
                )
        if switches is None:
            outcome = _pass_through_outcome(candidates, problems, gate.reason)
        else:
            state = await self._state.current()
            outcome = await self._offload(
                partial(
                    rank_candidates,
                    state=state,
                    candidates=candidates,
                    problems=problems,
                    options=request.options,
                    repository=repository,
                    dismissed=dismissed,
                    settings=settings,
                    switches=switches,
                    cancel=token,
                )
            )
        self._record(outcome, request, time.perf_counter() - started)
        return outcome

    async def _switches(self, repository_url: str) -> RankingSwitches:
        decisions = [
            await self._gate.check(feature=feature, repository_url=repository_url)
            for feature in SWITCHED_FEATURES
        ]
        return RankingSwitches(*(decision.enabled for decision in decisions))

    def _record(self, outcome: RankOutcome, request: RankRequest, seconds: float) -> None:
        instruments = self._instruments
        attributes = {"learning_applied": outcome.learning_applied}
        instruments.ranking_duration.record(seconds, attributes)
        instruments.diversity_factor.record(request.options.diversity)
        if outcome.hidden:
            instruments.findings_hidden.add(outcome.hidden)
            instruments.expected_useful_hidden.add(outcome.expected_useful_hidden)
        duplicates = sum(1 for d in outcome.duplicate_of if d >= 0)
        if duplicates:
            instruments.deduplication_hits.add(duplicates)
        pairs = zip(outcome.score, outcome.suppressed, strict=True)
        shown = [score for score, hidden in pairs if not hidden]
        if shown and outcome.learning_applied:
            instruments.last_average_score = float(np.mean(shown))


def _prepare_inline(
    request: RankRequest, settings: RankingSettings, cancel: CancelToken
) -> Candidates:
    """Validation and fingerprints of the inline findings (CPU work, on a ranking thread)."""
    validate_request(request, limits=settings.limits, max_findings=settings.max_findings)
    cancel.check()
    inline = InlineFindings.of(request.inline)
    n = len(inline)
    offset = len(request.finding_ids)
    fingerprints = finding_fingerprints(
        inline.rule_id, inline.file_path, inline.message, inline.code_context
    )
    return Candidates(
        request_index=list(range(offset, offset + n)),
        finding_id=[0] * n,
        client_finding_id=[v or "" for v in inline.client_finding_id],
        rule_id=inline.rule_id,
        category=inline.category,
        severity=inline.severity,
        confidence=inline.confidence,
        file_path=inline.file_path,
        line_start=inline.line_start,
        message=inline.message,
        fingerprint=fingerprints,
    )


def _candidates(
    request: RankRequest,
    records: dict[int, FindingRecord],
    repository: tuple[int, int] | None,
    inline: Candidates,
) -> tuple[Candidates, list[ItemProblem]]:
    candidates: list[Candidate] = []
    problems: list[ItemProblem] = []
    for index, finding_id in enumerate(request.finding_ids):
        record = records.get(finding_id)
        if record is None:
            problems.append(ItemProblem(index, 5, "FINDING_NOT_FOUND", f"no finding {finding_id}"))
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
    if not candidates:
        return inline, problems
    return Candidates.of(candidates) + inline, problems


# A repository the system has never seen has no id; -1 matches no learned level.
UNKNOWN = -1


def rank_candidates(
    *,
    state: LearnedState,
    candidates: Sequence[Candidate],
    problems: Sequence[ItemProblem],
    options: RankOptions,
    repository: tuple[int, int] | None,
    dismissed: set[str],
    settings: RankingSettings,
    cancel: CancelToken,
    switches: RankingSwitches = RankingSwitches(),
) -> RankOutcome:
    """The pure assembly of a ranking: predict, decide, rank. Runs on a ranking thread."""
    n = len(candidates)
    columns = Candidates.of(candidates)
    repository_id, team_id = repository if repository is not None else (UNKNOWN, UNKNOWN)
    rules = columns.rule_id
    categories = columns.category
    severity = np.asarray(columns.severity, dtype=np.int64).reshape(n)
    features = FindingFeatures.build(
        team_id=np.full(n, team_id, dtype=np.int64),
        repository_id=np.full(n, repository_id, dtype=np.int64),
        rule_id=rules,
        category=categories,
        severity=severity,
        confidence=np.asarray(columns.confidence, dtype=np.float64).reshape(n),
        file_path=columns.file_path,
    )
    cancel.check()
    prediction = state.model.predict(features, calibrated=switches.calibration)
    probability = prediction.probability
    known = repository is not None
    is_security = np.array([c == "security" for c in categories], dtype=bool).reshape(n)
    # Critical security findings are exempted in rank_findings, which flags them instead.
    decision, trial = state.hiding(
        prediction=prediction,
        rules=features.rule_id,
        never_hide=np.zeros(n, dtype=bool),
        repository_id=repository_id if known else None,
        team_id=team_id if known else None,
        policy=settings.suppression,
    )
    upper = decision.upper
    hide_reason = decision.reason
    if settings.threshold_suppression and known:
        hide_reason = _below_thresholds(state, hide_reason, upper, categories, repository_id)
    fingerprints = columns.fingerprint
    inputs = RankingInputs(
        probability=probability,
        logit=prediction.logit,
        logit_sd=prediction.sd,
        severity=severity,
        is_security=is_security,
        hide_reason=hide_reason,
        previously_dismissed=np.array(
            [f in dismissed for f in fingerprints] if dismissed else [False] * n, dtype=bool
        ).reshape(n),
        fingerprints=fingerprints,
        file_paths=columns.file_path,
        line_starts=np.asarray(columns.line_start, dtype=np.int64).reshape(n),
        rule_ids=rules,
        categories=categories,
        simhashes=_simhashes(columns.message),
    )
    ranking_policy = RankingPolicy(
        max_results=options.max_results,
        diversity=options.diversity,
        exploration=options.exploration and switches.exploration,
        suppress=switches.suppression,
        deduplicate=switches.deduplication,
        seed=options.seed,
        severity_values=settings.severity_values,
        line_window=settings.line_window,
        max_hamming=settings.max_hamming,
    )
    result = rank_findings(inputs, ranking_policy, cancel)
    hidden = result.hidden_by_learning
    values = np.asarray(settings.severity_values)[severity - 1]
    return RankOutcome(
        candidates=columns,
        order=result.order.tolist(),
        rank=result.rank.tolist(),
        score=result.score.tolist(),
        probability=probability.tolist(),
        suppressed=result.suppressed.tolist(),
        reason=result.reason.tolist(),
        duplicate_of=result.duplicate_of.tolist(),
        flagged=result.flagged.tolist(),
        explanations=Explanations(
            prediction=prediction,
            state=state,
            upper=upper.tolist(),
            floor=decision.floor.tolist(),
            probation_evidence=trial.evidence.tolist(),
            diversity_penalty=result.diversity_penalty.tolist(),
            explored=result.explored.tolist(),
            severity_value=values.tolist(),
        ),
        learning_applied=True,
        not_applied_reason="",
        model_version=state.version,
        hidden=int(hidden.sum()),
        expected_useful_hidden=float(probability[hidden].sum()),
        problems=tuple(problems),
    )


def _below_thresholds(
    state: LearnedState,
    hide_reason: ObjectArray,
    upper: FloatArray,
    categories: Sequence[str],
    repository_id: int,
) -> ObjectArray:
    """Adds BELOW_FLOOR for findings under a certified threshold of their category (only the
    repository's own or its team's, and only where the target was reachable)."""
    chain = state.chain(repository_id)
    result = hide_reason.copy()
    for category in set(categories):
        threshold, source = state.threshold_for(category, chain)
        if math.isnan(threshold) or not source.startswith(("own@", "inherited:team@")):
            continue
        members = np.array([c == category for c in categories]) & (upper < threshold)
        result[members & (result == "")] = REASON_BELOW_FLOOR
    return result


def _pass_through_outcome(
    candidates: Sequence[Candidate], problems: Sequence[ItemProblem], reason: str
) -> RankOutcome:
    result = pass_through(len(candidates))
    n = len(candidates)
    return RankOutcome(
        candidates=Candidates.of(candidates),
        order=result.order.tolist(),
        rank=result.rank.tolist(),
        score=[math.nan] * n,
        probability=[math.nan] * n,
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
