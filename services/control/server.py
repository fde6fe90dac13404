"""Wiring of the control service: the one place its parts are built and connected."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from reviewlearn.control.v1 import control_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control.announcer import GateAnnouncer
from services.control.domain.health import HealthLimits, Status
from services.control.handlers import SERVICE, ControlHandlers
from services.control.settings import ControlSettings
from services.control.storage.unit import replica_reads, transactions
from services.control.usecases.audit import AuditLog
from services.control.usecases.gates import GateCommands
from services.control.usecases.health import SystemHealthCheck
from services.control.usecases.propagation import PropagationTracker
from services.control.usecases.retention import Retention
from services.control.usecases.rollout import RolloutPolicy, RolloutService
from shared.db.engine import create_engine, create_session_factory
from shared.gates.client import GateClient
from shared.gates.model import GateSnapshot
from shared.gates.store import load_snapshot
from shared.http_side import HttpResponse
from shared.periodic import Periodic
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding

if TYPE_CHECKING:
    from redis.asyncio import Redis


def _redis(url: str | None) -> Redis | None:
    if not url:
        return None
    from redis.asyncio import Redis  # only when configured: the client costs startup time

    return Redis.from_url(url)


def build_server(settings: ControlSettings, *, engine: AsyncEngine | None = None) -> ServiceRuntime:
    db = engine or create_engine(settings)
    sessions = create_session_factory(db)
    gate_client = GateClient.from_settings(settings, engine=db)
    redis = _redis(settings.redis_url)
    tracker = PropagationTracker(
        reads=replica_reads(sessions),
        live_seconds=settings.replica_gone_seconds,
        poll_seconds=settings.propagation_poll_seconds,
    )

    announcer = GateAnnouncer(gates=gate_client, redis=redis)
    units = transactions(sessions)

    async def snapshots() -> GateSnapshot:
        return await load_snapshot(db)

    health = SystemHealthCheck(
        reads=units,
        snapshot=lambda: gate_client.snapshot,
        live_seconds=settings.replica_gone_seconds,
        window=timedelta(seconds=settings.health_window_seconds),
        limits=HealthLimits(
            backlog=settings.health_backlog_limit,
            learning_update_age=timedelta(hours=settings.health_learning_update_hours),
        ),
    )

    async def health_document(query: Mapping[str, list[str]]) -> HttpResponse:
        report, _ = await health.assess()
        return HttpResponse(
            503 if report.status is Status.UNHEALTHY else 200,
            json.dumps(report.as_document()).encode(),
            "application/json",
        )

    retention = Retention(transactions=units, keep=timedelta(days=settings.sample_retention_days))

    handlers = ControlHandlers(  # type: ignore[abstract]
        gates=GateCommands(transactions=units, after_commit=announcer),
        gate_client=gate_client,
        snapshots=snapshots,
        propagation=tracker,
        audit=AuditLog(reads=units),
        pages=settings.page_tokens(),
        health=health,
        rollout=RolloutService(
            transactions=units,
            after_commit=announcer,
            policy=RolloutPolicy(
                salt=settings.rollout_salt,
                window=settings.criteria_window(),
                shadow_window=settings.shadow_window(),
                integrity_jobs=settings.integrity_job_names,
            ),
        ),
    )
    return ServiceRuntime(
        settings=settings,
        engine=db,
        owns_engine=engine is None,
        gates=gate_client,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
        http_routes={"/health/learning": health_document},
        background=[Periodic("control-retention", retention.prune, interval=3600.0)],
        cleanups=[redis.aclose] if redis is not None else [],
    )
