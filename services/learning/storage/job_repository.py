"""SQL of the batch jobs: the ``job_runs`` ledger, the per-job advisory lock, and the reads and
deletes of the integrity check and the clean-up. Never commits: the runner decides.

The lock is ``pg_try_advisory_xact_lock``: transaction-scoped, so it works through PgBouncer in
transaction mode and is released when the holder's transaction ends or its connection dies.
The holding transaction sets ``application_name`` (``SET LOCAL``, also transaction-scoped), so
another caller can name the holder from ``pg_stat_activity``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.learning.domain.jobs import FinishedRun, Frequency, JobStatus
from services.learning.domain.scopes import ScopeType
from services.learning.storage.fold_repository import FoldRepository
from shared.db.models import (
    ConfidenceThresholdRow,
    JobRun,
    LearningMetric,
    PatternRow,
    Repository,
    Team,
)
from shared.idempotency import IdempotentRequest, RequestLedger

LOCK_NAMESPACE = 0x524C4A42  # "RLJB": the first key of every job lock (fits a signed int4)


def lock_key(job_name: str) -> int:
    """The second key of a job's advisory lock: a stable signed 32-bit hash of its name."""
    value = zlib.crc32(job_name.encode())
    return value - 2**32 if value >= 2**31 else value


# What the learning service keeps per team or repository (orphaned when the scope is deleted).
_SCOPED_TABLES: tuple[tuple[str, Any], ...] = (
    ("learning_metrics", LearningMetric),
    ("confidence_thresholds", ConfidenceThresholdRow),
    ("pattern_metrics", PatternRow),
)


@dataclass(frozen=True)
class JobRunRecord:
    run_id: int
    job_name: str
    frequency: int
    scheduled_for: datetime
    status: JobStatus
    request_id: str | None
    attempts: int
    error: str
    reason: str
    holder: str
    summary: dict[str, Any]
    repositories_done: tuple[str, ...]
    repositories_failed: tuple[tuple[str, str], ...]
    check_passed: bool | None
    duration_seconds: float
    started_at: datetime
    finished_at: datetime | None


def _record(row: JobRun) -> JobRunRecord:
    return JobRunRecord(
        run_id=row.id,
        job_name=row.job_name,
        frequency=row.frequency,
        scheduled_for=row.scheduled_for,
        status=JobStatus(row.status),
        request_id=row.request_id,
        attempts=row.attempts,
        error=row.error,
        reason=row.reason,
        holder=row.holder,
        summary=dict(row.summary),
        repositories_done=tuple(row.repositories_done),
        repositories_failed=tuple(
            (f["repository_url"], f["reason"]) for f in row.repositories_failed
        ),
        check_passed=row.check_passed,
        duration_seconds=row.duration_seconds,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class JobRunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def answered(self, request: IdempotentRequest) -> bytes | None:
        """The stored answer of an earlier call with this id (``RequestLedger.find``): a run is
        recorded only once it answered, so nothing is recorded here."""
        return await RequestLedger(self._session).find(request)

    async def claim(self, request: IdempotentRequest) -> bytes | None:
        """None when this call is the first with its id (shared.idempotency)."""
        return await RequestLedger(self._session).claim(request)

    async def answer(self, request: IdempotentRequest, response: bytes) -> None:
        await RequestLedger(self._session).answer(request, response)

    async def claim_slot(
        self, *, job_name: str, frequency: Frequency, slot: datetime, request_id: str | None
    ) -> int:
        """The id of the slot's row, inserted now unless another call inserted it first."""
        inserted = await self._session.execute(
            pg_insert(JobRun)
            .values(
                job_name=job_name,
                frequency=int(frequency),
                scheduled_for=slot,
                status=int(JobStatus.RUNNING),
                request_id=request_id,
            )
            .on_conflict_do_nothing(index_elements=["job_name", "scheduled_for"])
            .returning(JobRun.id)
        )
        run_id = inserted.scalar_one_or_none()
        if run_id is not None:
            return int(run_id)
        found = await self._session.execute(
            select(JobRun.id).where(JobRun.job_name == job_name, JobRun.scheduled_for == slot)
        )
        return int(found.scalar_one())

    async def try_lock(self, job_name: str, *, holder: str) -> bool:
        """Takes the job's lock for this transaction if nobody holds it."""
        await self._session.execute(
            text("SELECT set_config('application_name', :name, true)"),
            {"name": holder[:63]},  # PostgreSQL truncates application_name to 63 bytes
        )
        taken = await self._session.execute(
            text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"),
            {"namespace": LOCK_NAMESPACE, "key": lock_key(job_name)},
        )
        return bool(taken.scalar_one())

    async def lock_holder(self, job_name: str) -> str:
        """Who holds the job's lock: its application name, backend pid and since when."""
        found = await self._session.execute(
            text(
                "SELECT a.application_name, a.pid, a.xact_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.classid = (:namespace)::oid AND l.objid = (:key)::oid LIMIT 1"
            ),
            # oids are unsigned: the signed keys are read back modulo 2^32.
            {"namespace": LOCK_NAMESPACE % 2**32, "key": lock_key(job_name) % 2**32},
        )
        row = found.first()
        if row is None:
            return ""
        name, pid, since = row
        when = f" since {since:%Y-%m-%d %H:%M:%S}Z" if since is not None else ""
        return f"{name or 'unnamed client'} (pid {pid}){when}"

    async def run(self, run_id: int) -> JobRunRecord:
        row = (await self._session.execute(select(JobRun).where(JobRun.id == run_id))).scalar_one()
        return _record(row)

    async def start(self, run_id: int, *, holder: str, request_id: str | None) -> None:
        await self._session.execute(
            update(JobRun)
            .where(JobRun.id == run_id)
            .values(
                status=int(JobStatus.RUNNING),
                holder=holder,
                request_id=request_id,
                reason="",
                error="",
                attempts=0,
                started_at=func.now(),
                finished_at=None,
            )
        )

    async def abandon_others(self, job_name: str, *, running_id: int) -> int:
        """Marks the job's other started runs that never finished FAILED: called under the
        job's lock, so their runners are gone (a lock dies with its connection). Rows only
        claimed (no holder yet) belong to callers still waiting for the lock."""
        result = await self._session.execute(
            update(JobRun)
            .where(
                JobRun.job_name == job_name,
                JobRun.id != running_id,
                JobRun.status == int(JobStatus.RUNNING),
                JobRun.holder != "",
            )
            .values(
                status=int(JobStatus.FAILED),
                error="abandoned: its runner stopped before finishing",
                finished_at=func.now(),
            )
        )
        return cast(CursorResult[Any], result).rowcount or 0

    async def finish(self, run_id: int, run: FinishedRun) -> None:
        await self._session.execute(
            update(JobRun)
            .where(JobRun.id == run_id)
            .values(
                status=int(run.status),
                attempts=run.attempts,
                error=run.error,
                reason=run.reason,
                summary=run.summary,
                repositories_done=list(run.done),
                repositories_failed=[
                    {"repository_url": url, "reason": why} for url, why in run.failed.items()
                ],
                check_passed=run.check_passed,
                duration_seconds=run.duration_seconds,
                finished_at=func.now(),
            )
        )

    async def runs(
        self, *, job_name: str | None, status: JobStatus | None, before_id: int | None, limit: int
    ) -> list[JobRunRecord]:
        """Newest first."""
        query = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
        if job_name:
            query = query.where(JobRun.job_name == job_name)
        if status is not None:
            query = query.where(JobRun.status == int(status))
        if before_id is not None:
            query = query.where(JobRun.id < before_id)
        return [_record(row) for row in (await self._session.execute(query)).scalars()]

    async def last_summary(self, job_name: str, *, before_id: int) -> dict[str, Any] | None:
        """The summary of the job's last successful run before this one."""
        found = await self._session.execute(
            select(JobRun.summary)
            .where(
                JobRun.job_name == job_name,
                JobRun.status == int(JobStatus.SUCCEEDED),
                JobRun.id < before_id,
            )
            .order_by(JobRun.id.desc())
            .limit(1)
        )
        summary = found.scalar_one_or_none()
        return None if summary is None else dict(summary)

    async def repositories(self, urls: Sequence[str] | None) -> list[tuple[str, str]]:
        """(repository URL, team name) of the given repositories that exist, or of all."""
        query = (
            select(Repository.url, Team.name)
            .join(Team, Team.id == Repository.team_id)
            .order_by(Repository.url)
        )
        if urls is not None:
            query = query.where(Repository.url.in_(list(urls)))
        return [(str(url), str(team)) for url, team in await self._session.execute(query)]


class MaintenanceRepository:
    """The integrity check's reads and the clean-up's deletes over learning's own tables (the
    orphaned outcomes are read by ``Folder.validate``, on its snapshot)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._fold = FoldRepository(session)

    async def orphaned_scope_rows(self) -> dict[str, int]:
        """Learned rows (thresholds, patterns, non-zero metrics) of teams or repositories that
        no longer exist."""
        counts: dict[str, int] = {}
        for name, table in _SCOPED_TABLES:
            found = await self._session.execute(
                select(func.count()).select_from(table).where(_scope_gone(table))
            )
            counts[name] = int(found.scalar_one())
        return counts

    async def watermark(self) -> tuple[int, int]:
        """The fold's watermark and the current snapshot's horizon (xmin)."""
        watermark = await self._fold.watermark()
        snapshot = await self._fold.snapshot()
        return watermark, snapshot.horizon

    async def delete_orphaned_outcomes(self) -> int:
        result = await self._session.execute(
            text(
                "DELETE FROM finding_outcomes o WHERE NOT EXISTS "
                "(SELECT 1 FROM findings f WHERE f.id = o.finding_id)"
            )
        )
        return cast(CursorResult[Any], result).rowcount or 0

    async def delete_orphaned_scope_rows(self) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for name, table in _SCOPED_TABLES:
            result = await self._session.execute(delete(table).where(_scope_gone(table)))
            deleted[name] = cast(CursorResult[Any], result).rowcount or 0
        zero = await self._session.execute(
            delete(LearningMetric).where(
                LearningMetric.shown == 0,
                LearningMetric.positive == 0,
                LearningMetric.negative == 0,
                LearningMetric.dismissed == 0,
            )
        )
        deleted["zero_metrics"] = cast(CursorResult[Any], zero).rowcount or 0
        return deleted

    async def delete_job_runs(self, *, older_than: timedelta) -> int:
        result = await self._session.execute(
            delete(JobRun).where(
                JobRun.started_at < func.now() - older_than,
                JobRun.status != int(JobStatus.RUNNING),
            )
        )
        return cast(CursorResult[Any], result).rowcount or 0


def _scope_gone(table: Any) -> Any:
    """The row's team or repository no longer exists (global rows never are)."""
    team_gone = ~select(Team.id).where(Team.id == table.scope_id).exists()
    repository_gone = ~select(Repository.id).where(Repository.id == table.scope_id).exists()
    return ((table.scope_type == int(ScopeType.TEAM)) & team_gone) | (
        (table.scope_type == int(ScopeType.REPOSITORY)) & repository_gone
    )
