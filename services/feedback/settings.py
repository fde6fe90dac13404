"""Settings of the feedback service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from shared.settings import ServiceSettings, port_field


class FeedbackSettings(ServiceSettings):
    service_name: str = "feedback"
    grpc_port: int = port_field("feedback", 50051, "GRPC")
    metrics_port: int = port_field("feedback", 9101, "METRICS")
