"""Wiring of the control service: the one place its parts are built and connected."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import httpx
from pydantic import SecretStr
from reviewlearn.control.v1 import control_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control.announcer import GateAnnouncer
from services.control.domain.alerts import Channel
from services.control.domain.health import HealthLimits, Status
from services.control.handlers import SERVICE, ControlHandlers
from services.control.instruments import AlertInstruments
from services.control.notifiers import (
    EmailNotifier,
    LogNotifier,
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    SmtpConfig,
)
from services.control.settings import ControlSettings
from services.control.storage.unit import ControlUnit, replica_reads, transactions
from services.control.usecases.alert_delivery import NotificationDispatcher, RetryPolicy
from services.control.usecases.alerts import AlertPolicy, AlertService
from services.control.usecases.audit import AuditLog
from services.control.usecases.gates import AfterCommit, GateCommands
from services.control.usecases.health import SystemHealthCheck
from services.control.usecases.propagation import PropagationTracker
from services.control.usecases.retention import Retention
from services.control.usecases.rollout import RolloutPolicy, RolloutService
from shared.db.engine import create_engine, create_session_factory
from shared.gates.client import GateClient
from shared.gates.model import GateSnapshot
from shared.gates.store import load_snapshot
from shared.http_side import HttpResponse
from shared.periodic import Periodic
from shared.redis_namespace import RedisTarget
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding

Transactions = Callable[[], AbstractAsyncContextManager[ControlUnit]]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _notifiers(settings: ControlSettings, client: httpx.AsyncClient) -> dict[Channel, Notifier]:
    return {
        Channel.PAGERDUTY: PagerDutyNotifier(
            client=client,
            url=settings.alert_pagerduty_url,
            routing_key=_secret(settings.alert_pagerduty_routing_key),
        ),
        Channel.SLACK: SlackNotifier(
            client=client, webhook_url=_secret(settings.alert_slack_webhook_url)
        ),
        Channel.EMAIL: EmailNotifier(
            SmtpConfig(
                host=settings.alert_smtp_host,
                port=settings.alert_smtp_port,
                sender=settings.alert_smtp_from,
                recipients=tuple(a.strip() for a in settings.alert_smtp_to.split(",") if a.strip()),
                username=settings.alert_smtp_username,
                password=_secret(settings.alert_smtp_password),
                starttls=settings.alert_smtp_starttls,
                timeout=settings.alert_http_timeout_seconds,
            )
        ),
        Channel.LOG: LogNotifier(),
    }


def build_alerts(
    settings: ControlSettings, units: Transactions, after_commit: AfterCommit
) -> tuple[AlertService, httpx.AsyncClient]:
    """The alerting part: the evaluator, the outbox dispatcher and the channels' senders."""
    client = httpx.AsyncClient(timeout=settings.alert_http_timeout_seconds)
    instruments = AlertInstruments(fresh_seconds=3 * settings.alert_evaluation_seconds + 5)
    dispatcher = NotificationDispatcher(
        transactions=units,
        notifiers=_notifiers(settings, client),
        policy=RetryPolicy(
            max_attempts=settings.alert_max_attempts,
            base_seconds=settings.alert_retry_base_seconds,
            max_seconds=settings.alert_retry_max_seconds,
            lease=timedelta(seconds=settings.alert_delivery_lease_seconds),
        ),
        counters=instruments,
    )

    service = AlertService(
        transactions=units,
        dispatcher=dispatcher,
        observer=instruments,
        after_commit=after_commit,
        policy=AlertPolicy(
            live_seconds=settings.replica_gone_seconds,
            signal_window=timedelta(seconds=settings.alert_signal_window_seconds),
            job_window=timedelta(hours=settings.alert_job_window_hours),
            info_window=timedelta(hours=settings.alert_info_window_hours),
            integrity_jobs=settings.integrity_job_names,
            resolve_channels=frozenset(
                Channel(c.strip())
                for c in settings.alert_resolve_channels.split(",")
                if c.strip() in Channel._value2member_map_
            ),
            safeguard_action=settings.alert_safeguard_action,
        ),
    )
    return service, client


def build_server(settings: ControlSettings, *, engine: AsyncEngine | None = None) -> ServiceRuntime:
    db = engine or create_engine(settings)
    sessions = create_session_factory(db)
    gate_client = GateClient.from_settings(settings, engine=db)
    target = RedisTarget.of(settings)
    redis = target.connect() if target is not None else None
    tracker = PropagationTracker(
        reads=replica_reads(sessions),
        live_seconds=settings.replica_gone_seconds,
        poll_seconds=settings.propagation_poll_seconds,
    )

    announcer = GateAnnouncer(gates=gate_client, redis=redis)
    units = transactions(sessions)

    async def snapshots() -> GateSnapshot:
        return await load_snapshot(db)

    health = SystemHealthCheck(
        reads=units,
        snapshot=lambda: gate_client.snapshot,
        live_seconds=settings.replica_gone_seconds,
        window=timedelta(seconds=settings.health_window_seconds),
        limits=HealthLimits(
            backlog=settings.health_backlog_limit,
            learning_update_age=timedelta(hours=settings.health_learning_update_hours),
        ),
    )

    async def health_document(query: Mapping[str, list[str]]) -> HttpResponse:
        report, _ = await health.assess()
        return HttpResponse(
            503 if report.status is Status.UNHEALTHY else 200,
            json.dumps(report.as_document()).encode(),
            "application/json",
        )

    retention = Retention(transactions=units, keep=timedelta(days=settings.sample_retention_days))
    gates = GateCommands(transactions=units, after_commit=announcer)
    alerts, http_client = build_alerts(settings, units, announcer)

    handlers = ControlHandlers(
        gates=gates,
        alerts=alerts,
        gate_client=gate_client,
        snapshots=snapshots,
        propagation=tracker,
        audit=AuditLog(reads=units),
        pages=settings.page_tokens(),
        health=health,
        rollout=RolloutService(
            transactions=units,
            after_commit=announcer,
            policy=RolloutPolicy(
                salt=settings.rollout_salt,
                window=settings.criteria_window(),
                shadow_window=settings.shadow_window(),
                integrity_jobs=settings.integrity_job_names,
            ),
        ),
    )
    return ServiceRuntime(
        settings=settings,
        engine=db,
        owns_engine=engine is None,
        gates=gate_client,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: control_pb2_grpc.add_ControlServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
        http_routes={"/health/learning": health_document},
        background=[
            Periodic("control-retention", retention.prune, interval=3600.0),
            Periodic(
                "control-alerts",
                alerts.tick,
                interval=settings.alert_evaluation_seconds,
                run_at_start=False,
            ),
        ],
        cleanups=[http_client.aclose, *([redis.aclose] if redis is not None else [])],
    )
