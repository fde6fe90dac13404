"""Wiring of the insights service: the one place its parts are built and connected."""

from __future__ import annotations

from reviewlearn.insights.v1 import insights_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.handlers import SERVICE, InsightsHandlers
from services.insights.settings import InsightsSettings
from shared.db.engine import create_engine
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(
    settings: InsightsSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
    # Abstract only to mypy: answer_unimplemented fills in the RPCs of the pending issue.
    handlers = InsightsHandlers()  # type: ignore[abstract]
    return ServiceRuntime(
        settings=settings,
        engine=engine or create_engine(settings),
        owns_engine=engine is None,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: insights_pb2_grpc.add_InsightsServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
    )
