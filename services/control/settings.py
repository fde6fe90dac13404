"""Settings of the control service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from shared.settings import ServiceSettings, port_field


class ControlSettings(ServiceSettings):
    service_name: str = "control"
    grpc_port: int = port_field("control", 50054, "GRPC")
    metrics_port: int = port_field("control", 9104, "METRICS")
