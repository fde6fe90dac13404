"""The outcome log the model is fitted on, and where fitted models and thresholds are kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.learning.domain.features import FindingFeatures, OutcomeLog
from services.learning.storage.state_repository import StateRepository
from shared.db.models import (
    ConfidenceThresholdRow,
    LearnedModelRow,
    ThresholdChange,
)
from shared.idempotency import IdempotentRequest, RequestLedger
from shared.outcome import Outcome, sql_decisive, sql_outcome_case

# A finding's time is when it was first seen: when it was recorded, or its first reaction if
# that is earlier (a history loaded after the fact carries its real times in the reactions).
# Its outcome is the winning reaction by the outcome rule (shared.outcome) among the reactions
# that had happened by the cut: a reaction after the cut was not known then.
_OUTCOME_LOG = f"""
WITH reactions AS (
    SELECT fb.finding_id, fb.kind, fb.occurred_at, fb.id
    FROM suggestion_feedback fb
    WHERE CAST(:reactions_before AS timestamptz) IS NULL
       OR fb.occurred_at < CAST(:reactions_before AS timestamptz)
), winners AS (
    SELECT DISTINCT ON (r.finding_id) r.finding_id, r.kind
    FROM reactions r
    ORDER BY r.finding_id, {sql_decisive("r.kind")} DESC, r.occurred_at DESC, r.id DESC
), first_reactions AS (
    SELECT finding_id, min(occurred_at) AS first_at FROM reactions GROUP BY finding_id
), log AS (
    SELECT f.review_id, f.team_id, f.repository_id, f.rule_id, f.category, f.severity,
        f.confidence, f.file_path, least(f.created_at, fr.first_at) AS seen_at,
        {sql_outcome_case("w.kind")} = {int(Outcome.POSITIVE)} AS useful
    FROM findings f
    JOIN winners w ON w.finding_id = f.id
    JOIN first_reactions fr ON fr.finding_id = f.id
)
SELECT review_id, team_id, repository_id, rule_id, category, severity, confidence, file_path,
    extract(epoch FROM seen_at)::float8, useful
FROM log
WHERE (CAST(:seen_from AS timestamptz) IS NULL OR seen_at >= CAST(:seen_from AS timestamptz))
  AND (CAST(:seen_before AS timestamptz) IS NULL OR seen_at < CAST(:seen_before AS timestamptz))
"""


@dataclass(frozen=True)
class StoredModel:
    version: str
    document: dict[str, Any]
    fitted_at: datetime
    active: bool


class ModelRepository(StateRepository):
    """The state reads (scopes, thresholds) plus the outcome log and what a tune writes."""

    async def serialize_tunes(self) -> None:
        """Takes the tune lock for this transaction: concurrent tunes (and retries of one) run
        one after the other, so a retry finds the first one's stored answer."""
        await self._session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('reviewlearn.learning.tune'))")
        )

    async def outcome_log(
        self,
        *,
        reactions_before: datetime | None = None,
        seen_from: datetime | None = None,
        seen_before: datetime | None = None,
    ) -> OutcomeLog:
        """Every finding somebody had reacted to (by ``reactions_before``, when given), first
        seen in [seen_from, seen_before)."""
        result = await self._session.execute(
            text(_OUTCOME_LOG),
            {
                "reactions_before": reactions_before,
                "seen_from": seen_from,
                "seen_before": seen_before,
            },
        )
        rows = result.all()
        if not rows:
            empty_int = np.zeros(0, dtype=np.int64)
            return OutcomeLog(
                FindingFeatures.build(
                    team_id=empty_int,
                    repository_id=empty_int,
                    rule_id=[],
                    category=[],
                    severity=empty_int,
                    confidence=np.zeros(0),
                    file_path=[],
                ),
                np.zeros(0),
                empty_int,
                np.zeros(0, dtype=bool),
            )
        review, team, repository, rule, category, severity, confidence, path, seen, useful = zip(
            *rows, strict=True
        )
        return OutcomeLog(
            FindingFeatures.build(
                team_id=team,
                repository_id=repository,
                rule_id=list(rule),
                category=list(category),
                severity=severity,
                confidence=confidence,
                file_path=list(path),
            ),
            seen_at=np.asarray(seen, dtype=np.float64),
            review_id=np.asarray(review, dtype=np.int64),
            useful=np.asarray(useful, dtype=bool),
        )

    # ---------------------------------------------------------------- models

    async def save_model(
        self,
        *,
        version: str,
        document: dict[str, Any],
        samples: int,
        fitted_by: str,
        reason: str,
        keep: int,
    ) -> None:
        """Stores a model as the active one; the ``keep`` most recent earlier ones stay for
        rollback."""
        await self._session.execute(
            update(LearnedModelRow).where(LearnedModelRow.active).values(active=False)
        )
        await self._session.execute(
            pg_insert(LearnedModelRow).values(
                version=version,
                document=document,
                samples=samples,
                active=True,
                fitted_by=fitted_by,
                reason=reason,
            )
        )
        kept = (
            select(LearnedModelRow.id)
            .order_by(LearnedModelRow.id.desc())
            .limit(keep + 1)
            .scalar_subquery()
        )
        await self._session.execute(delete(LearnedModelRow).where(LearnedModelRow.id.not_in(kept)))

    async def models(self) -> list[StoredModel]:
        """The kept models, newest first."""
        rows = await self._session.execute(
            select(
                LearnedModelRow.version,
                LearnedModelRow.document,
                LearnedModelRow.fitted_at,
                LearnedModelRow.active,
            ).order_by(LearnedModelRow.id.desc())
        )
        return [StoredModel(*row) for row in rows]

    async def activate(self, version: str) -> bool:
        """Makes a kept model the active one (a rollback); False when there is no such model."""
        exists = (
            await self._session.execute(
                select(LearnedModelRow.id).where(LearnedModelRow.version == version)
            )
        ).scalar_one_or_none()
        if exists is None:
            return False
        await self._session.execute(
            update(LearnedModelRow).where(LearnedModelRow.active).values(active=False)
        )
        await self._session.execute(
            update(LearnedModelRow).where(LearnedModelRow.version == version).values(active=True)
        )
        return True

    # ---------------------------------------------------------------- thresholds

    async def replace_thresholds(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._session.execute(delete(ConfidenceThresholdRow))
        for start in range(0, len(rows), 5000):
            await self._session.execute(
                pg_insert(ConfidenceThresholdRow), list(rows[start : start + 5000])
            )

    async def add_threshold_changes(self, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), 5000):
            await self._session.execute(
                pg_insert(ThresholdChange), list(rows[start : start + 5000])
            )

    # ---------------------------------------------------------------- request ids

    async def claim(self, request: IdempotentRequest) -> bytes | None:
        """None when this call is the first with its id, else the first call's answer
        (shared.idempotency: another request under the same id is REQUEST_ID_REUSED)."""
        return await RequestLedger(self._session).claim(request)

    async def answer(self, request: IdempotentRequest, response: bytes) -> None:
        await RequestLedger(self._session).answer(request, response)
