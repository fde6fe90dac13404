"""Settings of the insights service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from shared.settings import ServiceSettings, port_field


class InsightsSettings(ServiceSettings):
    service_name: str = "insights"
    grpc_port: int = port_field("insights", 50053, "GRPC")
    metrics_port: int = port_field("insights", 9103, "METRICS")
