"""TuneConfidenceThresholds (and, later, the scheduled jobs): fit the model, then the thresholds.

One transaction per call: the request id is checked, the outcome log read, and the model,
thresholds, change history and stored answer written in the same transaction, under a lock
that serialises tunes. Two concurrent retries of one request therefore never double-write: the
second waits, then finds the first one's answer and replays it. The same request id with a
different request is an error (REQUEST_ID_REUSED), never a silent replay. Request ids are
scoped by the caller, so two clients cannot collide.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from services.learning.domain.features import OutcomeLog
from services.learning.domain.learned_state import ThresholdEntry
from services.learning.domain.model import (
    Calibration,
    LogOddsModel,
    ModelSummary,
    Validation,
)
from services.learning.domain.model_fitting import FitParameters, fit_model
from services.learning.domain.scopes import Scope
from services.learning.domain.threshold_fitting import (
    ThresholdParameters,
    diff_thresholds,
    fit_thresholds,
)
from services.learning.instruments import LearningInstruments
from services.learning.storage.state_repository import ThresholdRecord
from services.learning.storage.transactions import Transaction
from shared.idempotency import IdempotentRequest, request_digest

SERVICE = "learning"
METHOD = "TuneConfidenceThresholds"


class TuningStore(Protocol):
    async def serialize_tunes(self) -> None: ...
    async def claim(self, request: IdempotentRequest) -> bytes | None: ...
    async def answer(self, request: IdempotentRequest, response: bytes) -> None: ...
    async def outcome_log(self) -> OutcomeLog: ...
    async def team_of_repository(self) -> dict[int, int]: ...
    async def thresholds(self) -> list[ThresholdRecord]: ...
    async def replace_thresholds(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def add_threshold_changes(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def save_model(
        self,
        *,
        version: str,
        document: dict[str, Any],
        samples: int,
        fitted_by: str,
        reason: str,
        keep: int,
    ) -> None: ...


class StateRefresher(Protocol):
    async def refresh(self) -> object: ...


@dataclass(frozen=True)
class TuneRequest:
    request_id: str | None
    dry_run: bool
    target_not_useful_rate: float | None
    reason: str
    actor: str

    def idempotent(self) -> IdempotentRequest | None:
        """The ledger entry of an applied tune with a request id: keyed by the caller, checked
        against a digest of everything else in the request."""
        if not self.request_id or self.dry_run:
            return None
        return IdempotentRequest(
            service=SERVICE,
            method=METHOD,
            caller=self.actor,
            request_id=self.request_id,
            digest=request_digest(
                {"target_not_useful_rate": self.target_not_useful_rate, "reason": self.reason}
            ),
        )


@dataclass(frozen=True)
class ThresholdChangeView:
    scope: Scope
    category: str
    old_threshold: float
    new_threshold: float
    old_source: str
    new_source: str
    sample_size: int


@dataclass(frozen=True)
class TuneOutcome:
    changes: tuple[ThresholdChangeView, ...]
    applied: bool
    unchanged: int
    model: ModelSummary


class TuneGate(Protocol):
    async def require(self, *, feature: str, repository_url: str = "") -> object: ...


class FitModel:
    def __init__(
        self,
        *,
        transaction: Transaction[TuningStore],
        gate: TuneGate,
        state: StateRefresher,
        instruments: LearningInstruments,
        fit_parameters: FitParameters,
        threshold_parameters: ThresholdParameters,
        keep_models: int,
    ) -> None:
        self._transaction = transaction
        self._gate = gate
        self._state = state
        self._instruments = instruments
        self._fit_parameters = fit_parameters
        self._threshold_parameters = threshold_parameters
        self._keep_models = keep_models

    async def tune(self, request: TuneRequest) -> TuneOutcome:
        if not request.dry_run:
            # Under the kill switch (or with learning gated off) nothing new is learned; a dry
            # run changes nothing, so operators can still see what a tune would do.
            await self._gate.require(feature="learning")
        ledger_entry = request.idempotent()
        parameters = self._threshold_parameters
        if request.target_not_useful_rate is not None:
            parameters = replace(parameters, target_not_useful_rate=request.target_not_useful_rate)
        async with self._transaction() as store:
            if not request.dry_run:
                # Tunes run one at a time: each replaces the active model and every threshold.
                await store.serialize_tunes()
            if ledger_entry is not None:
                stored = await store.claim(ledger_entry)
                if stored is not None:
                    return _replay(stored)
            log = await store.outcome_log()
            team_of_repository = await store.team_of_repository()
            old = {
                ((t.scope_type, t.scope_id), t.category): ThresholdEntry(
                    t.threshold, t.source, t.target, t.not_useful_upper, t.sample_size
                )
                for t in await store.thresholds()
            }
            now = datetime.now(UTC)
            version = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
            # Fitting takes seconds on a big log: a worker thread keeps ranking responsive.
            model = await asyncio.to_thread(
                fit_model, log, self._fit_parameters, version=version, fitted_at=now
            )
            thresholds = await asyncio.to_thread(
                _thresholds, model, log, team_of_repository, parameters
            )
            diffs, unchanged = diff_thresholds(old, thresholds)
            outcome = TuneOutcome(
                changes=tuple(
                    ThresholdChangeView(
                        scope=d.scope,
                        category=d.category,
                        old_threshold=_value(d.old.threshold if d.old else None),
                        new_threshold=_value(d.new.threshold),
                        old_source=d.old.source if d.old else "",
                        new_source=d.new.source,
                        sample_size=d.new.sample_size,
                    )
                    for d in diffs
                ),
                applied=not request.dry_run,
                unchanged=unchanged,
                model=model.summary(),
            )
            if request.dry_run:
                return outcome
            await store.save_model(
                version=version,
                document=model.to_document(),
                samples=model.samples,
                fitted_by=request.actor,
                reason=request.reason,
                keep=self._keep_models,
            )
            await store.replace_thresholds(_threshold_rows(thresholds, now))
            await store.add_threshold_changes(
                _change_rows(
                    outcome,
                    tune_id=request.request_id or f"tune-{version}",
                    request=request,
                    now=now,
                )
            )
            if ledger_entry is not None:
                await store.answer(ledger_entry, _to_json(outcome))
        self._instruments.model_fits.add(1)
        self._instruments.threshold_changes.add(len(outcome.changes))
        # Reads and rankings right after this call see the new model.
        await self._state.refresh()
        return outcome


def _thresholds(
    model: LogOddsModel,
    log: OutcomeLog,
    team_of_repository: dict[int, int],
    parameters: ThresholdParameters,
) -> dict[tuple[Scope, str], ThresholdEntry]:
    probability = model.predict(log.features).probability if log.size else np.zeros(0)
    return fit_thresholds(
        probability=probability,
        useful=log.useful,
        category=log.features.category,
        team_id=log.features.team_id,
        repository_id=log.features.repository_id,
        team_of_repository=team_of_repository,
        parameters=parameters,
    )


def _value(threshold: float | None) -> float:
    return math.nan if threshold is None else threshold


def _threshold_rows(
    thresholds: dict[tuple[Scope, str], ThresholdEntry], now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "scope_type": scope[0],
            "scope_id": scope[1],
            "category": category,
            "threshold": entry.threshold,
            "source": entry.source,
            "target": entry.target,
            "not_useful_upper": entry.not_useful_upper,
            "sample_size": entry.sample_size,
            "updated_at": now,
        }
        for (scope, category), entry in thresholds.items()
    ]


def _change_rows(
    outcome: TuneOutcome, *, tune_id: str, request: TuneRequest, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "tune_id": tune_id,
            "scope_type": c.scope[0],
            "scope_id": c.scope[1],
            "category": c.category,
            "old_threshold": None if math.isnan(c.old_threshold) else c.old_threshold,
            "new_threshold": None if math.isnan(c.new_threshold) else c.new_threshold,
            "old_source": c.old_source,
            "new_source": c.new_source,
            "sample_size": c.sample_size,
            "actor": request.actor,
            "reason": request.reason,
            "changed_at": now,
        }
        for c in outcome.changes
    ]


def _to_json(outcome: TuneOutcome) -> bytes:
    data: dict[str, Any] = asdict(outcome)
    data["model"]["fitted_at"] = outcome.model.fitted_at.isoformat()
    return json.dumps({"outcome": data}, allow_nan=True).encode()


def _replay(stored: bytes) -> TuneOutcome:
    outcome = json.loads(stored)["outcome"]
    model = outcome["model"]
    validation = model.get("validation")
    return TuneOutcome(
        changes=tuple(
            ThresholdChangeView(**{**c, "scope": tuple(c["scope"])}) for c in outcome["changes"]
        ),
        applied=outcome["applied"],
        unchanged=outcome["unchanged"],
        model=ModelSummary(
            version=model["version"],
            fitted_at=datetime.fromisoformat(model["fitted_at"]),
            samples=model["samples"],
            acted_on=model["acted_on"],
            half_life_days=model["half_life_days"],
            prior_variance=model["prior_variance"],
            calibration=Calibration(**model["calibration"]),
            validation=None if validation is None else Validation(**validation),
        ),
    )
