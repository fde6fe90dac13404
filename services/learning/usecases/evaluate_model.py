"""EvaluateModel / ``reviewlearn evaluate``: replay the history out of time (domain.evaluation).

Reads only, in one transaction: the outcome log as it stands (to place the cut and to label the
findings after it) and as it stood at the cut (what the model may learn from).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from services.learning.domain.evaluation import Evaluation, evaluate
from services.learning.domain.features import BoolArray, OutcomeLog
from services.learning.domain.model_fitting import FitParameters
from services.learning.domain.scopes import Scope, ScopeType
from services.learning.domain.suppression import SuppressionPolicy
from services.learning.storage.transactions import Transaction
from services.learning.usecases.read_metrics import ReadStore, ScopeName, resolve
from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument

DEFAULT_HOLDOUT = 0.2
DEFAULT_K = 5
MIN_FINDINGS = 20
"""Below this many findings on either side of the cut the numbers would say nothing."""


class EvaluationStore(ReadStore, Protocol):
    async def outcome_log(
        self,
        *,
        reactions_before: datetime | None = None,
        seen_from: datetime | None = None,
        seen_before: datetime | None = None,
    ) -> OutcomeLog: ...


@dataclass(frozen=True)
class EvaluateRequest:
    cut_time: datetime | None
    holdout_fraction: float
    k: int
    scope: ScopeName

    def validate(self) -> None:
        violations = []
        if not (self.holdout_fraction == 0 or 0.0 < self.holdout_fraction < 1.0):
            violations.append(FieldViolation("holdout_fraction", "must lie in (0, 1)"))
        if self.k < 0:
            violations.append(FieldViolation("k", "must not be negative"))
        if violations:
            raise InvalidArgument(violations)


class EvaluateModel:
    def __init__(
        self,
        *,
        transaction: Transaction[EvaluationStore],
        fit_parameters: FitParameters,
        policy: SuppressionPolicy,
    ) -> None:
        self._transaction = transaction
        self._fit_parameters = fit_parameters
        self._policy = policy

    async def evaluate(self, request: EvaluateRequest) -> Evaluation:
        request.validate()
        k = request.k or DEFAULT_K
        async with self._transaction() as store:
            scope = await resolve(store, request.scope)
            everything = await store.outcome_log()
            cut = request.cut_time or _cut_leaving(
                everything, request.holdout_fraction or DEFAULT_HOLDOUT
            )
            train = await store.outcome_log(reactions_before=cut, seen_before=cut)
        test = everything.take(np.flatnonzero(everything.seen_at >= cut.timestamp()))
        test = test.take(np.flatnonzero(_in_scope(test, scope)))
        if train.size < MIN_FINDINGS or test.size < MIN_FINDINGS:
            raise FailedPrecondition(
                f"{train.size} findings with reactions before the cut ({cut.isoformat()}) and "
                f"{test.size} after it; an evaluation needs at least {MIN_FINDINGS} on each "
                "side: record more feedback, or move the cut",
                reason="TOO_LITTLE_HISTORY",
            )
        now = datetime.now(UTC)
        return await asyncio.to_thread(
            evaluate,
            train,
            test,
            cut_time=cut,
            k=k,
            fit_parameters=self._fit_parameters,
            policy=self._policy,
            version=f"evaluation-{uuid.uuid4().hex[:6]}",
            fitted_at=now,
        )


def _cut_leaving(log: OutcomeLog, share: float) -> datetime:
    """The first-seen time that leaves ``share`` of the findings after it."""
    if log.size == 0:
        raise FailedPrecondition(
            "no finding has a reaction yet: there is nothing to evaluate",
            reason="TOO_LITTLE_HISTORY",
        )
    seen = np.sort(log.seen_at)
    position = min(max(math.floor(log.size * (1.0 - share)), 0), log.size - 1)
    return datetime.fromtimestamp(float(seen[position]), UTC)


def _in_scope(log: OutcomeLog, scope: Scope) -> BoolArray:
    if scope[0] == ScopeType.TEAM:
        members: BoolArray = log.features.team_id == scope[1]
    elif scope[0] == ScopeType.REPOSITORY:
        members = log.features.repository_id == scope[1]
    else:
        members = np.ones(log.size, dtype=bool)
    return members
