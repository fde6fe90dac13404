"""Wiring of the feedback service: the one place its parts are built and connected."""

from __future__ import annotations

from typing import Any

from reviewlearn.feedback.v1 import feedback_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.handlers import SERVICE, FeedbackHandlers
from services.feedback.ingestion import FeedbackIngestion
from services.feedback.instruments import FeedbackInstruments
from services.feedback.notifier import ChangeNotifier, postgres_sender, redis_sender
from services.feedback.settings import FeedbackSettings
from shared.db.engine import create_engine, create_session_factory
from shared.periodic import Periodic
from shared.redis_namespace import RedisTarget
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(
    settings: FeedbackSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
    db = engine or create_engine(settings)
    instruments = FeedbackInstruments()
    target = RedisTarget.of(settings)
    redis = target.connect() if target is not None else None
    notifier = ChangeNotifier(
        redis_sender(redis) if redis is not None else postgres_sender(db),
        interval=settings.notify_interval_seconds,
    )
    ingestion = FeedbackIngestion(
        sessions=create_session_factory(db),
        # Every statement its own transaction: for the writes that are one statement.
        statements=create_session_factory(db.execution_options(isolation_level="AUTOCOMMIT")),
        limits=settings.limits(),
        instruments=instruments,
        notifier=notifier,
    )
    handlers = FeedbackHandlers(ingestion, pages=settings.page_tokens())

    async def measure_backlog() -> None:
        instruments.backlog = await ingestion.backlog()

    async def health_metrics() -> dict[str, Any]:
        return {
            "feedback_queue_size": instruments.backlog,
            "feedback_collection_success_rate": round(instruments.success_rate, 4),
        }

    return ServiceRuntime(
        settings=settings,
        engine=db,
        owns_engine=engine is None,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
        health_metrics=health_metrics,
        background=[
            Periodic(
                "feedback-backlog", measure_backlog, interval=settings.backlog_refresh_seconds
            ),
            notifier,
        ],
        cleanups=[redis.aclose] if redis is not None else [],
    )
