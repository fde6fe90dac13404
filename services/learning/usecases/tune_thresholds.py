"""TuneConfidenceThresholds: refit calibration and thresholds, show or apply the diff."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.learning.domain.scopes import Scope
from services.learning.domain.threshold_fitting import (
    TuneParameters,
    diff_thresholds,
    fit_curves,
    fit_thresholds,
    samples_from_rows,
)
from services.learning.instruments import LearningInstruments
from services.learning.model_cache import ModelStore
from services.learning.storage.learning_repository import LearningRepository
from shared.outcome import Outcome


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
    curves_fitted: int


def _value(threshold: float | None) -> float:
    return math.nan if threshold is None else threshold


class ConfidenceTuner:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: ModelStore,
        instruments: LearningInstruments,
    ) -> None:
        self._sessions = sessions
        self._models = models
        self._instruments = instruments

    async def tune(
        self,
        *,
        parameters: TuneParameters,
        dry_run: bool,
        reason: str,
        actor: str,
        request_id: str | None,
    ) -> TuneOutcome:
        if request_id and not dry_run:
            async with self._sessions.begin() as session:
                stored = await LearningRepository(session).stored_response(request_id)
            if stored is not None:
                return _outcome_from_json(stored)
        model = await self._models.refresh()
        async with self._sessions.begin() as session:
            rows = await LearningRepository(session).outcome_samples()
        samples = samples_from_rows(
            [
                (
                    r.team_id,
                    r.repository_id,
                    r.rule_id,
                    r.category,
                    r.confidence,
                    r.outcome == int(Outcome.POSITIVE),
                )
                for r in rows
            ]
        )
        # Fitting takes seconds on big histories: a worker thread keeps ranking responsive.
        curves = await asyncio.to_thread(fit_curves, samples, model.team_of_repository, parameters)
        thresholds = await asyncio.to_thread(
            fit_thresholds,
            samples,
            noisy_rules=model.noisy_rules,
            team_of_repository=model.team_of_repository,
            parameters=parameters,
        )
        diffs, unchanged = diff_thresholds(model.thresholds, thresholds)
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
            applied=not dry_run,
            unchanged=unchanged,
            curves_fitted=len(curves),
        )
        if dry_run:
            return outcome
        now = datetime.now(UTC)
        tune_id = request_id or f"tune-{now.isoformat()}"
        async with self._sessions.begin() as session:
            repo = LearningRepository(session)
            await repo.replace_curves(
                [
                    {
                        "scope_type": scope[0],
                        "scope_id": scope[1],
                        "category": category,
                        "method": curve.method,
                        "curve": curve.to_dict(),
                        "samples": curve.samples,
                        "ece": curve.ece,
                        "raw_ece": curve.raw_ece,
                        "fitted_at": now,
                    }
                    for (scope, category), curve in curves.items()
                ]
            )
            await repo.replace_thresholds(
                [
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
            )
            await repo.add_threshold_changes(
                [
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
                        "actor": actor,
                        "reason": reason,
                        "changed_at": now,
                    }
                    for c in outcome.changes
                ]
            )
            if request_id:
                await repo.store_response(
                    request_id, "TuneConfidenceThresholds", _outcome_to_json(outcome)
                )
        self._instruments.threshold_changes.add(len(outcome.changes))
        await self._models.refresh()
        return outcome


def _outcome_to_json(outcome: TuneOutcome) -> bytes:
    data: dict[str, Any] = asdict(outcome)
    return json.dumps(data, allow_nan=True).encode()


def _outcome_from_json(raw: bytes) -> TuneOutcome:
    data = json.loads(raw)
    return TuneOutcome(
        changes=tuple(
            ThresholdChangeView(**{**c, "scope": tuple(c["scope"])}) for c in data["changes"]
        ),
        applied=data["applied"],
        unchanged=data["unchanged"],
        curves_fitted=data["curves_fitted"],
    )
