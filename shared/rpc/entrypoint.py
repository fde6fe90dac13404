"""The body of every service's ``__main__``: telemetry, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import run_until_signalled
from shared.settings import ServiceSettings
from shared.telemetry import setup_telemetry

S = TypeVar("S", bound=ServiceSettings)


def serve(settings: S, build: Callable[[S], ServiceRuntime]) -> None:
    telemetry = setup_telemetry(
        service_name=settings.service_name,
        otlp_endpoint=settings.otlp_endpoint,
        log_level=settings.log_level,
        log_json=settings.log_json,
    )
    try:
        asyncio.run(run_until_signalled(build(settings)))
    finally:
        telemetry.shutdown()
