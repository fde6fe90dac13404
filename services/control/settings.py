"""Settings of the control service (``REVIEWLEARN_*`` environment variables)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr

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

    alert_evaluation_seconds: float = Field(30.0, gt=0)
    """How often the alert rules are evaluated (by one control replica at a time)."""
    alert_signal_window_seconds: float = Field(300.0, gt=0)
    """Rates and latencies (API error rate, insights p95) are computed over this window."""
    alert_job_window_hours: float = Field(24.0, gt=0)
    """The learning job failure rate looks back this long."""
    alert_info_window_hours: float = Field(1.0, gt=0)
    """Info rules (daily/weekly job summaries, threshold updates) count what happened this long."""
    alert_pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    alert_pagerduty_routing_key: SecretStr | None = None
    """The integration key of the PagerDuty service (Events API v2); unset → channel off."""
    alert_slack_webhook_url: SecretStr | None = None
    """A Slack incoming-webhook URL; unset → channel off."""
    alert_smtp_host: str | None = None
    alert_smtp_port: int = Field(25, ge=1, le=65535)
    alert_smtp_from: str = "reviewlearn@localhost"
    alert_smtp_to: str = ""
    """Comma-separated recipients of alert e-mail."""
    alert_smtp_username: str | None = None
    alert_smtp_password: SecretStr | None = None
    alert_smtp_starttls: bool = False
    alert_http_timeout_seconds: float = Field(10.0, gt=0)
    alert_max_attempts: int = Field(5, ge=1, le=20)
    """Delivery attempts per notification (5xx, 429, timeouts and refused connections retry)."""
    alert_retry_base_seconds: float = Field(1.0, ge=0)
    """Backoff before the n-th retry: base * 2^(n-1), at most ``alert_retry_max_seconds``."""
    alert_retry_max_seconds: float = Field(30.0, ge=0)
    alert_delivery_lease_seconds: float = Field(300.0, gt=0)
    """A replica that claimed a notification and died: another one takes it over after this."""
    alert_resolve_channels: str = "pagerduty,slack,email,log"
    """Channels that are told when an alert resolves (the others hear only of firing)."""
    alert_safeguard_action: Literal["pause", "kill_switch"] = "pause"
    """What a critical rollout safeguard does when it starts firing, besides refusing
    AdvanceRollout: ``pause`` records the pause in the audit log; ``kill_switch`` also engages
    the kill switch (audited; release it by hand)."""

    def criteria_window(self) -> timedelta:
        return timedelta(hours=self.rollout_criteria_window_hours)

    def shadow_window(self) -> timedelta:
        return timedelta(hours=self.rollout_shadow_window_hours)
