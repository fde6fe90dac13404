"""Settings of the control service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings, port_field


class ControlSettings(ServiceSettings):
    service_name: str = "control"
    grpc_port: int = port_field("control", 50054, "GRPC")
    metrics_port: int = port_field("control", 9104, "METRICS")

    replica_gone_seconds: float = Field(10.0, gt=0)
    """A replica whose last heartbeat is older than this is gone (heartbeats come every 2 s)."""
    propagation_poll_seconds: float = Field(0.02, gt=0)
    """How often a SetKillSwitch that waits looks at the replicas' acknowledgements."""
