"""Wiring of the learning service: the one place its parts are built and connected."""

from __future__ import annotations

from reviewlearn.learning.v1 import learning_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.handlers import SERVICE, LearningHandlers
from services.learning.settings import LearningSettings
from shared.db.engine import create_engine
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(
    settings: LearningSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
    handlers = LearningHandlers()  # type: ignore[abstract]
    return ServiceRuntime(
        settings=settings,
        engine=engine or create_engine(settings),
        owns_engine=engine is None,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: learning_pb2_grpc.add_LearningServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
    )
