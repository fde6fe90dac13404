"""Whether learning applies to a request: the one place every learned behaviour asks.

The answer comes from the shared gate client (``shared.gates``), evaluated from its in-memory
snapshot without I/O: the environment's hard kill (``LEARNING_ENABLED=false``), the control
plane's kill switch, per-feature and per-repository gates, and rollout membership (a repository
outside the rollout gets ``not_in_rollout``). The precedence is in ``shared.gates.model``.
"""

from __future__ import annotations

from shared.gates import Feature, GateClient, GateDecision

__all__ = ["GateDecision", "LearningGate"]


class LearningGate:
    def __init__(self, gates: GateClient) -> None:
        self._gates = gates

    async def check(self, *, feature: str, repository_url: str) -> GateDecision:
        return self._gates.evaluate(Feature(feature), repository_url)

    async def require(self, *, feature: str, repository_url: str = "") -> GateDecision:
        """The decision, or ``Unavailable`` (FEATURE_DISABLED) naming the switch when off."""
        return self._gates.require(Feature(feature), repository_url)
