"""What a notification says, and how each channel's protocol wants it said.

The outbox stores one channel-neutral ``payload`` per notification (written in the evaluation's
transaction, so a retry or another replica sends exactly what the evaluation decided); the
renderers here turn it into a PagerDuty Events API v2 event, a Slack incoming-webhook message or
an e-mail. All pure: the senders in ``services/control/notifiers.py`` do the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from enum import IntEnum
from typing import Any
from uuid import UUID

from services.control.domain.alerts import (
    Alert,
    AlertRule,
    AlertState,
    Channel,
    NotificationKind,
    dedup_key,
)

SOURCE = "reviewlearn-control"
# PagerDuty's payload.severity values.
_PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
_SLACK_COLOUR = {"critical": "#d00000", "warning": "#e8a317", "info": "#439fe0"}


class DeliveryStatus(IntEnum):
    """``alert_notifications.status``."""

    PENDING = 0
    DELIVERED = 1
    FAILED = 2


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def alert_payload(rule: AlertRule, alert: Alert, kind: NotificationKind) -> dict[str, Any]:
    return {
        "kind": str(kind),
        "rule_name": rule.name,
        "alert_id": alert.alert_id,
        "dedup_key": dedup_key(rule.name, alert.alert_id),
        "state": alert.state.name.lower(),
        "severity": rule.severity.label,
        "signal": rule.signal,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "value": alert.value,
        "summary": rule.summary(alert.value),
        "description": rule.description,
        "labels": rule.all_labels(),
        "annotations": dict(rule.annotations),
        "active_since": _iso(alert.active_since),
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
    }


def sample_payload(message: str, *, now: datetime) -> dict[str, Any]:
    return {
        "kind": str(NotificationKind.TEST),
        "rule_name": "test",
        "alert_id": 0,
        "dedup_key": f"reviewlearn/test/{int(now.timestamp() * 1000)}",
        "state": AlertState.FIRING.name.lower(),
        "severity": "info",
        "signal": "",
        "comparison": "",
        "threshold": 0.0,
        "value": None,
        "summary": message or "reviewlearn test notification",
        "description": "Sent by SendTestNotification: no alert is firing.",
        "labels": {"alertname": "test", "severity": "info"},
        "annotations": {},
        "active_since": now.isoformat(),
        "fired_at": now.isoformat(),
        "resolved_at": None,
    }


def _resolves(payload: Mapping[str, Any]) -> bool:
    return bool(payload["kind"] == NotificationKind.RESOLVED)


def pagerduty_event(payload: Mapping[str, Any], *, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger (firing, repeat, test) or resolve, same dedup_key."""
    if _resolves(payload):
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": payload["dedup_key"],
        }
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": payload["dedup_key"],
        "payload": {
            "summary": str(payload["summary"])[:1024],
            "source": SOURCE,
            "severity": _PAGERDUTY_SEVERITY.get(str(payload["severity"]), "info"),
            "timestamp": payload["fired_at"] or payload["active_since"],
            "component": str(payload["signal"]) or "reviewlearn",
            "group": "reviewlearn",
            "class": str(payload["rule_name"]),
            "custom_details": {
                "value": payload["value"],
                "condition": f"{payload['signal']} {payload['comparison']} {payload['threshold']}",
                "description": payload["description"],
                "labels": payload["labels"],
            },
        },
    }
    runbook = payload["annotations"].get("runbook_url")
    if runbook:
        event["links"] = [{"href": runbook, "text": "runbook"}]
    return event


def _headline(payload: Mapping[str, Any]) -> str:
    state = "RESOLVED" if _resolves(payload) else str(payload["severity"]).upper()
    if payload["kind"] == NotificationKind.TEST:
        state = "TEST"
    return f"[{state}] {payload['rule_name']}: {payload['summary']}"


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: the headline as text, the details as an attachment."""
    colour = "#2eb886" if _resolves(payload) else _SLACK_COLOUR.get(str(payload["severity"]))
    fields = [
        {"title": "value", "value": str(payload["value"]), "short": True},
        {
            "title": "condition",
            "value": f"{payload['comparison']} {payload['threshold']}",
            "short": True,
        },
    ]
    runbook = payload["annotations"].get("runbook_url")
    if runbook:
        fields.append({"title": "runbook", "value": str(runbook), "short": False})
    return {
        "text": _headline(payload),
        "attachments": [
            {
                "color": colour,
                "fallback": _headline(payload),
                "text": str(payload["description"]),
                "fields": fields,
            }
        ],
    }  # fmt: skip


def email_message(
    payload: Mapping[str, Any], *, sender: str, recipients: list[str]
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = _headline(payload)[:200]
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["X-Reviewlearn-Dedup-Key"] = str(payload["dedup_key"])
    lines = [
        _headline(payload),
        "",
        str(payload["description"]),
        "",
        f"signal:    {payload['signal']} {payload['comparison']} {payload['threshold']}",
        f"value:     {payload['value']}",
        f"state:     {payload['state']}",
        f"since:     {payload['active_since']}",
    ]
    if payload["resolved_at"]:
        lines.append(f"resolved:  {payload['resolved_at']}")
    runbook = payload["annotations"].get("runbook_url")
    if runbook:
        lines.append(f"runbook:   {runbook}")
    message.set_content("\n".join(lines) + "\n")
    return message


@dataclass(frozen=True)
class QueuedNotification:
    """A row of the outbox, claimed for delivery."""

    notification_id: int
    channel: Channel
    kind: NotificationKind
    payload: Mapping[str, Any]
    attempts: int
    claim: UUID
    """The claim's token: the row's attempts and outcome are this claim's to record while the
    row still carries it (another replica claims it anew once the lease has run out)."""
