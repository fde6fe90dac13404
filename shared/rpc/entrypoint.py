"""The body of every service's ``__main__``: telemetry, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

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
        run_event_loop(run_until_signalled(build(settings)), use_uvloop=settings.uvloop)
    finally:
        telemetry.shutdown()


def run_event_loop(main: Coroutine[Any, Any, None], *, use_uvloop: bool = True) -> None:
    """Runs ``main`` on uvloop when asked for and installed, else on asyncio's own loop.

    uvloop cut the feedback service's CPU per RecordFeedback call by about 30% in the benchmark
    (tests/benchmarks/README.md); the benchmarks' reference servers run on the same loop.
    """
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # not built for this platform: the standard loop serves
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
