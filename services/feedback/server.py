"""Wiring of the feedback service: the one place its parts are built and connected."""

from __future__ import annotations

from reviewlearn.feedback.v1 import feedback_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.handlers import SERVICE, FeedbackHandlers
from services.feedback.settings import FeedbackSettings
from shared.db.engine import create_engine
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(
    settings: FeedbackSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
    handlers = FeedbackHandlers()
    return ServiceRuntime(
        settings=settings,
        engine=engine or create_engine(settings),
        owns_engine=engine is None,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
    )
