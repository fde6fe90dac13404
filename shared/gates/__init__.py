"""Feature gates and the kill switch as every service sees them.

Use from any service's ``server.py``::

    gates = GateClient.from_settings(settings, engine=db)   # or runtime.gates
    ...
    ServiceRuntime(settings=settings, engine=db, gates=gates, ...)

and on the request path ``gates.require(Feature.INSIGHTS)`` (raises UNAVAILABLE naming the switch)
or ``gates.evaluate(Feature.RANKING, repository_url)`` (a ``GateDecision``). ``ServiceRuntime``
starts and stops the client, reports it in health and its applied version in the heartbeat; a
service that passes none gets one built from its settings.
"""

from shared.gates.client import GateClient
from shared.gates.model import DecidedBy, Feature, GateDecision, GateSnapshot

__all__ = ["DecidedBy", "Feature", "GateClient", "GateDecision", "GateSnapshot"]
