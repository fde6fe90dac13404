"""Wiring of the control service: the one place its parts are built and connected."""

from __future__ import annotations

from reviewlearn.control.v1 import control_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control.handlers import SERVICE, ControlHandlers
from services.control.settings import ControlSettings
from shared.db.engine import create_engine
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(settings: ControlSettings, *, engine: AsyncEngine | None = None) -> ServiceRuntime:
    # Abstract only to mypy: answer_unimplemented fills in the RPCs of the pending issue.
    handlers = ControlHandlers()  # type: ignore[abstract]
    return ServiceRuntime(
        settings=settings,
        engine=engine or create_engine(settings),
        owns_engine=engine is None,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
    )
