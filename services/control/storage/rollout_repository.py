"""SQL of the rollout: the phase history, the exposure ledger, and membership over the known
repositories (bucketed in SQL by the same hash every replica computes)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.rollout import PhaseRecord
from shared.db.models import Repository, RolloutExposure, RolloutPhaseRow
from shared.gates.model import Rollout
from shared.gates.store import bucket_sql


def _record(row: RolloutPhaseRow) -> PhaseRecord:
    return PhaseRecord(
        phase=row.phase,
        percentage=row.percentage,
        salt=row.salt,
        started_at=row.started_at,
        started_by=row.actor,
        reason=row.reason,
        forced=row.forced,
        sticky_exposure=row.sticky_exposure,
        issues_found=tuple(str(i) for i in row.issues_found or ()),
        success_metrics=dict(row.success_metrics or {}),
        ended_at=row.ended_at,
    )


def _membership_sql(rollout: Rollout) -> tuple[str, dict[str, object]]:
    """A WHERE clause over ``repositories r`` selecting the rollout's members."""
    if not rollout.in_force:
        return "true", {}
    clause = f"{bucket_sql('r.url')} < :limit"
    if rollout.sticky_exposure:
        clause = (
            f"({clause} OR EXISTS (SELECT 1 FROM rollout_exposures e "
            "WHERE e.repository_url = r.url))"
        )
    return clause, {"salt": rollout.salt, "limit": rollout.bucket_limit}


class RolloutRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def history(self) -> list[PhaseRecord]:
        rows = await self._session.execute(select(RolloutPhaseRow).order_by(RolloutPhaseRow.id))
        return [_record(row) for row in rows.scalars()]

    async def current(self) -> PhaseRecord | None:
        row = (
            await self._session.execute(
                select(RolloutPhaseRow).order_by(RolloutPhaseRow.id.desc()).limit(1)
            )
        ).scalar_one_or_none()
        return _record(row) if row is not None else None

    async def close_current(
        self, *, issues_found: Sequence[str], exit_metrics: Sequence[dict[str, object]]
    ) -> None:
        row = (
            await self._session.execute(
                select(RolloutPhaseRow).order_by(RolloutPhaseRow.id.desc()).limit(1)
            )
        ).scalar_one_or_none()
        if row is None:
            return
        row.ended_at = func.now()
        row.issues_found = [*(row.issues_found or []), *issues_found]
        row.success_metrics = {**(row.success_metrics or {}), "exit": list(exit_metrics)}
        await self._session.flush()

    async def start(self, record: PhaseRecord) -> PhaseRecord:
        row = RolloutPhaseRow(
            phase=record.phase,
            percentage=record.percentage,
            salt=record.salt,
            actor=record.started_by,
            reason=record.reason,
            forced=record.forced,
            sticky_exposure=record.sticky_exposure,
            success_metrics=dict(record.success_metrics),
            issues_found=list(record.issues_found),
        )
        self._session.add(row)
        await self._session.flush()
        await self._session.refresh(row)
        return _record(row)

    async def ever_exposed(self, repository_url: str) -> bool:
        return await self._session.get(RolloutExposure, repository_url) is not None

    async def counts(self, rollout: Rollout) -> tuple[int, int, int]:
        """Known repositories in the rollout, all known repositories, ever exposed."""
        clause, parameters = _membership_sql(rollout)
        row = (
            await self._session.execute(
                text(f"SELECT count(*) FILTER (WHERE {clause}), count(*) FROM repositories r"),
                parameters,
            )
        ).one()
        exposed = (
            await self._session.execute(select(func.count()).select_from(RolloutExposure))
        ).scalar_one()
        return int(row[0]), int(row[1]), int(exposed)

    async def members(self, rollout: Rollout, *, after: str | None, limit: int) -> list[str]:
        clause, parameters = _membership_sql(rollout)
        rows = await self._session.execute(
            text(
                f"SELECT r.url FROM repositories r WHERE {clause} "
                "AND (CAST(:after AS text) IS NULL OR r.url > :after) ORDER BY r.url LIMIT :n"
            ),
            {**parameters, "after": after, "n": limit},
        )
        return [str(row[0]) for row in rows]

    async def known_repository(self, repository_url: str) -> bool:
        found = await self._session.execute(
            select(Repository.id).where(Repository.url == repository_url)
        )
        return found.first() is not None
