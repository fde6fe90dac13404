"""What the system recorded over a window, for rollout criteria and system health: replica
samples of every service, job runs, and the learning service's own tables (read only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.health import ServiceWindow
from services.control.domain.rollout import Measurements
from shared.heartbeat.stats import BUCKET_COUNT, quantile_seconds

SUCCEEDED, FAILED, PARTIAL = 2, 3, 5  # reviewlearn.learning.v1.JobStatus (job_runs.status)


class SignalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def measurements(self, *, since: datetime, integrity_jobs: Sequence[str]) -> Measurements:
        samples = (
            await self._session.execute(
                text(
                    "SELECT coalesce(sum(rpc_count), 0), coalesce(sum(error_count), 0), "
                    "max(pool_in_use::float8 / nullif(pool_capacity, 0)), "
                    "max(rss_bytes::float8 / nullif(memory_limit_bytes, 0)), count(*) "
                    "FROM replica_samples WHERE recorded_at >= :since"
                ),
                {"since": since},
            )
        ).one()
        rpcs, errors, pool, memory, sample_rows = samples
        buckets = [0] * BUCKET_COUNT
        for index, count in await self._session.execute(
            text(
                "SELECT u.i, sum(u.b) FROM replica_samples s, "
                "unnest(s.latency_buckets) WITH ORDINALITY AS u(b, i) "
                "WHERE s.recorded_at >= :since GROUP BY u.i"
            ),
            {"since": since},
        ):
            if 1 <= index <= BUCKET_COUNT:
                buckets[index - 1] = int(count)
        latency_samples = sum(buckets)
        jobs = (
            await self._session.execute(
                text(
                    # a partial run (some repositories failed) is not a success; an
                    # integrity run counts as failed when its check found a problem
                    "SELECT "
                    "count(*) FILTER (WHERE status IN (:ok, :failed, :partial) "
                    "  AND NOT job_name = ANY(:integrity)), "
                    "count(*) FILTER (WHERE status = :ok AND NOT job_name = ANY(:integrity)), "
                    "count(*) FILTER (WHERE status IN (:ok, :failed, :partial) "
                    "  AND job_name = ANY(:integrity)), "
                    "count(*) FILTER (WHERE (status = :failed OR check_passed IS FALSE) "
                    "  AND job_name = ANY(:integrity)) "
                    "FROM job_runs WHERE started_at >= :since"
                ),
                {
                    "since": since,
                    "ok": SUCCEEDED,
                    "failed": FAILED,
                    "partial": PARTIAL,
                    "integrity": list(integrity_jobs),
                },
            )
        ).one()
        finished, succeeded, checks, check_failures = (int(v) for v in jobs)
        # The serving model's own out-of-time validation, stored with it by the learning
        # service's fit (services/learning/domain/model.py, ``to_document``); null when the fit
        # had too few later findings to validate on.
        validation = (
            await self._session.execute(
                text(
                    "SELECT version, (document->'validation'->>'auc')::float8, "
                    "(document->'validation'->>'samples')::bigint "
                    "FROM learned_models WHERE active"
                )
            )
        ).first()
        model, auc, validated = validation if validation is not None else ("", None, 0)
        return Measurements(
            rpc_count=int(rpcs),
            error_rate=int(errors) / int(rpcs) if rpcs else None,
            latency_p95_ms=quantile_seconds(buckets, 0.95) * 1000 if latency_samples else None,
            latency_samples=latency_samples,
            job_runs=finished,
            learning_update_success=succeeded / finished if finished else None,
            integrity_runs=checks,
            integrity_failures=check_failures if checks else None,
            pool_utilisation=float(pool) if pool is not None and sample_rows else None,
            memory_utilisation=float(memory) if memory is not None else None,
            offline_evaluation_auc=float(auc) if auc is not None else None,
            offline_evaluation_model=str(model),
            offline_evaluation_samples=int(validated or 0),
        )

    async def service_windows(self, *, since: datetime) -> dict[str, ServiceWindow]:
        """Per service: RPCs, server-side errors and p95 over every replica's samples."""
        counts = {
            str(service): (int(rpcs), int(errors))
            for service, rpcs, errors in await self._session.execute(
                text(
                    "SELECT service, sum(rpc_count), sum(error_count) FROM replica_samples "
                    "WHERE recorded_at >= :since GROUP BY service"
                ),
                {"since": since},
            )
        }
        buckets: dict[str, list[int]] = {}
        for service, index, count in await self._session.execute(
            text(
                "SELECT s.service, u.i, sum(u.b) FROM replica_samples s, "
                "unnest(s.latency_buckets) WITH ORDINALITY AS u(b, i) "
                "WHERE s.recorded_at >= :since GROUP BY s.service, u.i"
            ),
            {"since": since},
        ):
            row = buckets.setdefault(str(service), [0] * BUCKET_COUNT)
            if 1 <= index <= BUCKET_COUNT:
                row[index - 1] = int(count)
        windows = {}
        for service, (rpcs, errors) in counts.items():
            latency = buckets.get(service, [])
            windows[service] = ServiceWindow(
                rpc_count=rpcs,
                error_count=errors,
                latency_p95_ms=quantile_seconds(latency, 0.95) * 1000 if sum(latency) else None,
            )
        return windows
