"""Whether learning applies to a request: the one place every learned behaviour asks.

Today the only switch is the environment's hard kill (``LEARNING_ENABLED=false``). The control
plane's kill switch, per-feature and per-repository gates and rollout membership plug in here,
behind the same ``check``, so no caller changes when they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    enabled: bool
    reason: str = ""


class LearningGate:
    def __init__(self, *, learning_enabled: bool) -> None:
        self._learning_enabled = learning_enabled

    async def check(self, *, feature: str, repository_url: str) -> GateDecision:
        if not self._learning_enabled:
            return GateDecision(False, "learning is disabled by LEARNING_ENABLED=false")
        return GateDecision(True)
