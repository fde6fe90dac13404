"""Whether insights may answer: the one check every insights RPC and the dashboard make.

The answer comes from the shared gate client (``ControlPlaneGate``): the environment's hard kill
(``LEARNING_ENABLED=false``), the control plane's kill switch and the ``insights`` feature's
gate, from the in-memory snapshot. ``EnvironmentGate`` is the hard kill alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.errors import Unavailable
from shared.gates import Feature, GateClient


@dataclass(frozen=True)
class GateDecision:
    enabled: bool
    reason: str = ""


class InsightsGate(Protocol):
    def decision(self) -> GateDecision:
        """Never does I/O: gates are evaluated from an in-memory snapshot."""
        ...


class EnvironmentGate:
    def __init__(self, *, learning_enabled: bool) -> None:
        self._decision = (
            GateDecision(True)
            if learning_enabled
            else GateDecision(False, "learning is disabled by LEARNING_ENABLED=false")
        )

    def decision(self) -> GateDecision:
        return self._decision


class ControlPlaneGate:
    def __init__(self, gates: GateClient) -> None:
        self._gates = gates

    def decision(self) -> GateDecision:
        # Insights answer for teams, not repositories: the kill switch, the global gates and
        # the environment decide.
        decision = self._gates.evaluate(Feature.INSIGHTS)
        return GateDecision(decision.enabled, decision.reason)


def require_insights(gate: InsightsGate) -> None:
    """Raises UNAVAILABLE with the reason when insights are switched off."""
    decision = gate.decision()
    if not decision.enabled:
        raise Unavailable(
            f"insights are switched off: {decision.reason}",
            reason="INSIGHTS_DISABLED",
            metadata={"feature": "insights", "why": decision.reason},
        )
