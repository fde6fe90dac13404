"""After a gate change commits: tell Redis subscribers, and apply it in this replica at once.

PostgreSQL NOTIFY is sent inside the changing transaction (``GateRepository.bump_version``);
Redis has no transactions with PostgreSQL, so it is published after the commit. A failed publish
only delays replicas until their next poll.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.gates.client import GateClient
from shared.gates.store import CHANNEL

if TYPE_CHECKING:
    from shared.redis_namespace import NamespacedRedis

log = logging.getLogger("reviewlearn.control.announcer")


class GateAnnouncer:
    def __init__(self, *, gates: GateClient, redis: NamespacedRedis | None) -> None:
        self._gates = gates
        self._redis = redis

    async def __call__(self, version: int) -> None:
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, str(version))
            except Exception as exc:
                log.warning("could not publish gate version %s on Redis: %s", version, exc)
        # Read-your-writes for the caller: this replica's EvaluateFeature answers from it.
        await self._gates.refresh(at_least=version)
