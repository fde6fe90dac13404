"""What the alert signals are computed from, besides heartbeats and samples: job runs and the
threshold history (tables other services write; read only here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.alert_signals import JobFacts, ThresholdFacts
from services.control.storage.signal_repository import FAILED, PARTIAL, SUCCEEDED

DAILY, WEEKLY = 2, 3  # reviewlearn.common.v1.JobFrequency

# Everything the alerts read of job_runs (migration 0007), in one statement. A partial run
# (some repositories failed after every attempt) counts as a failure of the job; the
# integrity signal is the newest integrity run's check_passed (its status says whether the
# check could run, check_passed what it found).
_JOB_FACTS = text(
    "SELECT "
    "count(*) FILTER (WHERE status IN (:ok, :failed, :partial) AND started_at >= :since "
    "  AND NOT job_name = ANY(:integrity)), "
    "count(*) FILTER (WHERE status IN (:failed, :partial) AND started_at >= :since "
    "  AND NOT job_name = ANY(:integrity)), "
    "(SELECT NOT check_passed FROM job_runs "
    "  WHERE job_name = ANY(:integrity) AND check_passed IS NOT NULL "
    "  ORDER BY coalesce(finished_at, started_at) DESC, id DESC LIMIT 1), "
    "count(*) FILTER (WHERE frequency = :daily AND status IN (:ok, :failed, :partial) "
    "  AND coalesce(finished_at, started_at) >= :recent), "
    "count(*) FILTER (WHERE frequency = :weekly AND status IN (:ok, :failed, :partial) "
    "  AND coalesce(finished_at, started_at) >= :recent) "
    "FROM job_runs WHERE started_at >= least(:since, :recent)"
)


class AlertSignalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def job_facts(
        self, *, now: datetime, window: timedelta, recent: timedelta, integrity_jobs: Sequence[str]
    ) -> JobFacts:
        row = (
            await self._session.execute(
                _JOB_FACTS,
                {
                    "ok": SUCCEEDED,
                    "failed": FAILED,
                    "partial": PARTIAL,
                    "daily": DAILY,
                    "weekly": WEEKLY,
                    "integrity": list(integrity_jobs),
                    "since": now - window,
                    "recent": now - recent,
                },
            )
        ).one()
        finished, failed, integrity_failed, daily, weekly = row
        return JobFacts(
            finished=int(finished),
            failed=int(failed),
            integrity_latest_failed=None if integrity_failed is None else bool(integrity_failed),
            daily_finished=int(daily),
            weekly_finished=int(weekly),
        )

    async def threshold_facts(self, *, now: datetime, recent: timedelta) -> ThresholdFacts:
        latest, changes = (
            await self._session.execute(
                text(
                    "SELECT max(changed_at), count(*) FILTER (WHERE changed_at >= :recent) "
                    "FROM threshold_history"
                ),
                {"recent": now - recent},
            )
        ).one()
        age = (now - latest).total_seconds() / 3600 if latest is not None else None
        return ThresholdFacts(age_hours=age, changes=int(changes))
