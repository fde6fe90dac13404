"""Whether insights may answer: the one check every insights RPC and the dashboard make.

Until the control plane's shared gate client lands, the only switch is the environment's hard
kill (``LEARNING_ENABLED=false``). The client plugs in behind the same ``decision()`` in
server.py, so no caller changes when it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.errors import Unavailable


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


def require_insights(gate: InsightsGate) -> None:
    """Raises UNAVAILABLE with the reason when insights are switched off."""
    decision = gate.decision()
    if not decision.enabled:
        raise Unavailable(
            f"insights are switched off: {decision.reason}",
            reason="INSIGHTS_DISABLED",
            metadata={"feature": "insights", "why": decision.reason},
        )
