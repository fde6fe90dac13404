"""Which replicas exist and which gate version each applied; waiting until all have applied one.

Replicas acknowledge a new version with an immediate heartbeat, so the wait polls those rows at
a short interval (cheap: one indexed read of a table with a row per replica) until no live
replica is behind or the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Protocol

from services.control.domain.replicas import Propagation, ReplicaView, propagation_of


class ReplicaRepository(Protocol):
    async def replicas(self, *, live_seconds: float, include_gone: bool) -> list[ReplicaView]: ...
    async def gate_version(self) -> int: ...


Reads = Callable[[], AbstractAsyncContextManager[ReplicaRepository]]


class PropagationTracker:
    def __init__(self, *, reads: Reads, live_seconds: float, poll_seconds: float = 0.02) -> None:
        self._reads = reads
        self._live_seconds = live_seconds
        self._poll_seconds = poll_seconds

    async def current(self, *, include_gone: bool = False) -> tuple[int, list[ReplicaView]]:
        async with self._reads() as replicas:
            version = await replicas.gate_version()
            views = await replicas.replicas(
                live_seconds=self._live_seconds, include_gone=include_gone
            )
        return version, views

    async def wait(self, version: int, within: timedelta) -> Propagation:
        """Until every live replica applied ``version`` or ``within`` passed."""
        started = time.monotonic()
        deadline = started + within.total_seconds()
        while True:
            async with self._reads() as replicas:
                views = await replicas.replicas(live_seconds=self._live_seconds, include_gone=False)
            now = time.monotonic()
            result = propagation_of(version, views, timedelta(seconds=now - started))
            if result.converged or now >= deadline:
                return result
            await asyncio.sleep(min(self._poll_seconds, max(deadline - now, 0.0)))
