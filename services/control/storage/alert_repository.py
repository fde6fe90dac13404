"""SQL of alerting: rules, alerts (``alert_events``), silences and the notification outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Update, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.control.domain.alert_messages import DeliveryStatus, QueuedNotification
from services.control.domain.alerts import (
    Alert,
    AlertRule,
    AlertState,
    Channel,
    NotificationKind,
    Severity,
    Silence,
)
from shared.db.models import (
    AlertEvent,
    AlertNotification,
    AlertNotificationAttempt,
    AlertRuleRow,
    AlertSilence,
)

EVALUATION_LOCK = "reviewlearn.control.alert_evaluation"


def _rule(row: AlertRuleRow) -> AlertRule:
    return AlertRule(
        name=row.name,
        signal=row.signal,
        comparison=row.comparison,
        threshold=row.threshold,
        for_duration=timedelta(seconds=row.for_seconds),
        keep_firing_for=timedelta(seconds=row.keep_firing_seconds),
        severity=Severity(row.severity),
        channels=tuple(Channel(c) for c in row.channels if c in Channel._value2member_map_),
        repeat_interval=timedelta(seconds=row.repeat_seconds),
        enabled=row.enabled,
        description=row.description,
        labels=dict(row.labels or {}),
        annotations=dict(row.annotations or {}),
        safeguard=row.safeguard,
    )


def _alert(row: AlertEvent) -> Alert:
    return Alert(
        rule_name=row.rule_name,
        state=AlertState(row.state),
        severity=Severity(row.severity),
        value=row.value,
        active_since=row.active_since,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        cleared_since=row.cleared_since,
        last_notified_at=row.last_notified_at,
        notifications=row.notifications,
        silenced=row.silenced,
        alert_id=row.id,
    )


def _alert_columns(alert: Alert) -> dict[str, Any]:
    return {
        "rule_name": alert.rule_name,
        "state": int(alert.state),
        "severity": int(alert.severity),
        "value": alert.value,
        "active_since": alert.active_since,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "cleared_since": alert.cleared_since,
        "last_notified_at": alert.last_notified_at,
        "notifications": alert.notifications,
        "silenced": alert.silenced,
    }


def _silence(row: AlertSilence) -> Silence:
    return Silence(
        silence_id=row.id,
        rule_names=tuple(row.rule_names),
        matchers=dict(row.matchers or {}),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        expired_at=row.expired_at,
    )


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # ------------------------------------------------------------------ rules

    async def rules(self) -> list[AlertRule]:
        rows = await self._session.scalars(
            select(AlertRuleRow).order_by(AlertRuleRow.severity, AlertRuleRow.name)
        )
        return [_rule(row) for row in rows]

    async def rule_for_update(self, name: str) -> AlertRule | None:
        row = await self._session.scalar(
            select(AlertRuleRow).where(AlertRuleRow.name == name).with_for_update()
        )
        return _rule(row) if row is not None else None

    async def put_rule(self, rule: AlertRule) -> None:
        columns = rule.as_json()
        statement = pg_insert(AlertRuleRow).values(name=rule.name, **columns)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[AlertRuleRow.name],
                set_={**columns, "updated_at": func.now()},
            )
        )

    # ------------------------------------------------------------------ evaluation

    async def lock_evaluation(self, *, wait: bool) -> bool:
        """Transaction-scoped: one evaluation at a time over every control replica."""
        if wait:
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": EVALUATION_LOCK}
            )
            return True
        return bool(
            await self._session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"),
                {"name": EVALUATION_LOCK},
            )
        )

    async def now(self) -> datetime:
        """The database's clock: every replica judges ``for`` and expiry by the same one."""
        moment: datetime = (await self._session.execute(select(func.now()))).scalar_one()
        return moment

    async def active_alerts(self) -> dict[str, Alert]:
        rows = await self._session.scalars(
            select(AlertEvent).where(
                AlertEvent.state.in_([int(AlertState.PENDING), int(AlertState.FIRING)])
            )
        )
        return {row.rule_name: _alert(row) for row in rows}

    async def save_alert(self, alert: Alert) -> Alert:
        columns = _alert_columns(alert)
        if alert.alert_id:
            await self._session.execute(
                update(AlertEvent).where(AlertEvent.id == alert.alert_id).values(**columns)
            )
            return alert
        alert_id = await self._session.scalar(
            pg_insert(AlertEvent).values(**columns).returning(AlertEvent.id)
        )
        return replace(alert, alert_id=int(alert_id or 0))

    async def alerts(
        self, *, rule_name: str, active_only: bool, before_id: int | None, limit: int
    ) -> list[Alert]:
        """Newest first, keyset-paged by id."""
        statement = select(AlertEvent).order_by(AlertEvent.id.desc()).limit(limit)
        if rule_name:
            statement = statement.where(AlertEvent.rule_name == rule_name)
        if active_only:
            statement = statement.where(
                AlertEvent.state.in_([int(AlertState.PENDING), int(AlertState.FIRING)])
            )
        if before_id is not None:
            statement = statement.where(AlertEvent.id < before_id)
        return [_alert(row) for row in await self._session.scalars(statement)]

    async def firing_safeguards(self) -> list[str]:
        """Critical safeguard rules whose alert fires now."""
        rows = await self._session.scalars(
            select(AlertEvent.rule_name)
            .join(AlertRuleRow, AlertRuleRow.name == AlertEvent.rule_name)
            .where(
                AlertEvent.state == int(AlertState.FIRING),
                AlertRuleRow.safeguard.is_(True),
                AlertRuleRow.enabled.is_(True),
                AlertRuleRow.severity == int(Severity.CRITICAL),
            )
            .order_by(AlertEvent.rule_name)
        )
        return list(rows)

    # ------------------------------------------------------------------ silences

    async def add_silence(self, silence: Silence) -> Silence:
        row = AlertSilence(
            rule_names=list(silence.rule_names),
            matchers=dict(silence.matchers),
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            created_by=silence.created_by,
            comment=silence.comment,
        )
        self._session.add(row)
        await self._session.flush()
        return _silence(row)

    async def silence_for_update(self, silence_id: int) -> Silence | None:
        row = await self._session.scalar(
            select(AlertSilence).where(AlertSilence.id == silence_id).with_for_update()
        )
        return _silence(row) if row is not None else None

    async def expire_silence(self, silence_id: int, *, at: datetime) -> None:
        await self._session.execute(
            update(AlertSilence).where(AlertSilence.id == silence_id).values(expired_at=at)
        )

    async def silences(self, *, now: datetime, include_expired: bool) -> list[Silence]:
        statement = select(AlertSilence).order_by(AlertSilence.id.desc())
        if not include_expired:
            statement = statement.where(
                AlertSilence.ends_at > now,
                AlertSilence.expired_at.is_(None),
            )
        return [_silence(row) for row in await self._session.scalars(statement)]

    # ------------------------------------------------------------------ outbox

    async def enqueue(
        self,
        *,
        alert_id: int | None,
        rule_name: str,
        channel: Channel,
        kind: NotificationKind,
        payload: dict[str, Any],
    ) -> int:
        notification_id = await self._session.scalar(
            pg_insert(AlertNotification)
            .values(
                alert_id=alert_id,
                rule_name=rule_name,
                channel=str(channel),
                kind=str(kind),
                payload=payload,
            )
            .returning(AlertNotification.id)
        )
        return int(notification_id or 0)

    async def claim(
        self, *, lease: timedelta, limit: int, only: Sequence[int] | None = None
    ) -> list[QueuedNotification]:
        """Pending notifications no other replica holds, leased to this one under a new claim
        token each; oldest first."""
        n = AlertNotification
        candidates = (
            select(n.id)
            .where(
                n.status == int(DeliveryStatus.PENDING),
                (n.claimed_until.is_(None)) | (n.claimed_until < func.now()),
            )
            .order_by(n.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if only is not None:
            candidates = candidates.where(n.id.in_(list(only)))
        rows = await self._session.execute(
            update(n)
            .where(n.id.in_(candidates.scalar_subquery()))
            .values(
                claimed_until=func.now()
                + func.make_interval(0, 0, 0, 0, 0, 0, lease.total_seconds()),
                claim_token=func.gen_random_uuid(),
            )
            .returning(n.id, n.channel, n.kind, n.payload, n.attempts, n.claim_token)
        )
        return sorted(
            (
                QueuedNotification(
                    notification_id=row.id,
                    channel=Channel(row.channel),
                    kind=NotificationKind(row.kind),
                    payload=row.payload,
                    attempts=row.attempts,
                    claim=row.claim_token,
                )
                for row in rows
            ),
            key=lambda q: q.notification_id,
        )

    def _held(self, notification_id: int, claim: UUID) -> Update:
        """An update of the notification that matches only while ``claim`` holds it pending."""
        n = AlertNotification
        return (
            update(n)
            .where(
                n.id == notification_id,
                n.claim_token == claim,
                n.status == int(DeliveryStatus.PENDING),
            )
            .returning(n.id)
        )

    async def record_attempt(
        self,
        notification_id: int,
        *,
        claim: UUID,
        attempt: int,
        outcome: str,
        status_code: int | None,
        detail: str,
        seconds: float,
    ) -> bool:
        """False (nothing written) when ``claim`` no longer holds the notification."""
        held = await self._session.scalar(
            self._held(notification_id, claim).values(
                attempts=attempt, last_error="" if outcome == "delivered" else detail[:2000]
            )
        )
        if held is None:
            return False
        self._session.add(
            AlertNotificationAttempt(
                notification_id=notification_id,
                attempt=attempt,
                outcome=outcome,
                status_code=status_code,
                detail=detail[:2000],
                duration_seconds=seconds,
            )
        )
        return True

    async def finish(self, notification_id: int, *, claim: UUID, status: DeliveryStatus) -> bool:
        """False (nothing written) when ``claim`` no longer holds the notification."""
        held = await self._session.scalar(
            self._held(notification_id, claim).values(
                status=int(status), finished_at=func.now(), claimed_until=None, claim_token=None
            )
        )
        return held is not None
