"""Settings of the control service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from datetime import timedelta

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

    rollout_salt: str = Field("reviewlearn", min_length=1, max_length=100)
    """Hashed with each repository URL into its rollout bucket. Fixed per installation: a new
    salt reshuffles which repositories a percentage selects (only before the first rollout)."""
    rollout_criteria_window_hours: float = Field(168.0, gt=0)
    """Rollout criteria look back over the current phase, at most this long."""
    rollout_shadow_window_hours: float = Field(24.0, gt=0)
    """Before any rollout (the shadow phase), criteria look back this long."""
    integrity_job_names: tuple[str, ...] = ("validate_data_integrity",)
    """Job runs (``job_runs.job_name``) that are data-integrity checks."""

    health_window_seconds: float = Field(300.0, gt=0)
    """System health judges error rate and latency over the samples of this window."""
    health_backlog_limit: int = Field(1000, ge=0)
    health_learning_update_hours: float = Field(1.0, gt=0)
    """A last learning update older than this degrades the learning engine."""
    sample_retention_days: float = Field(14.0, gt=0)
    """Replica samples and heartbeats of gone replicas older than this are deleted."""

    def criteria_window(self) -> timedelta:
        return timedelta(hours=self.rollout_criteria_window_hours)

    def shadow_window(self) -> timedelta:
        return timedelta(hours=self.rollout_shadow_window_hours)
