"""Settings of the learning service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from shared.settings import ServiceSettings, port_field


class LearningSettings(ServiceSettings):
    service_name: str = "learning"
    grpc_port: int = port_field("learning", 50052, "GRPC")
    metrics_port: int = port_field("learning", 9102, "METRICS")
