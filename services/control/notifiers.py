"""Senders of the alert channels: PagerDuty Events API v2 and Slack incoming webhooks over
HTTP (httpx), e-mail over SMTP (aiosmtplib), and the log.

A sender makes one attempt and says what happened; retrying with backoff and recording every
attempt is the dispatcher's job (``usecases/alert_delivery.py``). Server errors (5xx), 429,
timeouts and refused connections are worth retrying; other 4xx answers and a channel that is not
configured are not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiosmtplib
import httpx

from services.control.domain.alert_messages import email_message, pagerduty_event, slack_message
from services.control.domain.alerts import Channel

log = logging.getLogger("reviewlearn.control.alerts")


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retryable: bool = False
    status_code: int | None = None
    detail: str = ""

    @property
    def label(self) -> str:
        if self.delivered:
            return "delivered"
        return "retry" if self.retryable else "failed"


NOT_CONFIGURED = "channel not configured"


class Notifier(Protocol):
    async def send(self, payload: Mapping[str, Any]) -> Outcome: ...


def _http_outcome(response: httpx.Response) -> Outcome:
    code = response.status_code
    body = response.text[:200]
    if 200 <= code < 300:
        return Outcome(True, status_code=code, detail=body)
    return Outcome(False, retryable=code >= 500 or code == 429, status_code=code, detail=body)


async def _post(client: httpx.AsyncClient, url: str, body: Mapping[str, Any]) -> Outcome:
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as exc:
        return Outcome(False, retryable=True, detail=f"timeout: {exc.__class__.__name__}")
    except httpx.TransportError as exc:
        return Outcome(False, retryable=True, detail=f"{exc.__class__.__name__}: {exc}")
    return _http_outcome(response)


class PagerDutyNotifier:
    def __init__(self, *, client: httpx.AsyncClient, url: str, routing_key: str | None) -> None:
        self._client = client
        self._url = url
        self._routing_key = routing_key

    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        if not self._routing_key:
            return Outcome(
                False, detail=f"{NOT_CONFIGURED}: REVIEWLEARN_ALERT_PAGERDUTY_ROUTING_KEY"
            )
        event = pagerduty_event(payload, routing_key=self._routing_key)
        return await _post(self._client, self._url, event)


class SlackNotifier:
    def __init__(self, *, client: httpx.AsyncClient, webhook_url: str | None) -> None:
        self._client = client
        self._url = webhook_url

    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        if not self._url:
            return Outcome(False, detail=f"{NOT_CONFIGURED}: REVIEWLEARN_ALERT_SLACK_WEBHOOK_URL")
        return await _post(self._client, self._url, slack_message(payload))


@dataclass(frozen=True)
class SmtpConfig:
    host: str | None
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0


class EmailNotifier:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        config = self._config
        if not config.host or not config.recipients:
            return Outcome(False, detail=f"{NOT_CONFIGURED}: REVIEWLEARN_ALERT_SMTP_HOST, _TO")
        message = email_message(payload, sender=config.sender, recipients=list(config.recipients))
        try:
            await aiosmtplib.send(
                message,
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=config.password,
                start_tls=config.starttls,
                timeout=config.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx replies are transient by SMTP's own definition, 5xx permanent.
            return Outcome(False, retryable=400 <= exc.code < 500, status_code=exc.code,
                           detail=exc.message[:200])  # fmt: skip
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome(False, retryable=True, detail=f"{exc.__class__.__name__}: {exc}")
        return Outcome(True, status_code=250, detail="accepted")


class LogNotifier:
    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        log.warning(
            "alert %s: %s",
            payload["kind"],
            payload["summary"],
            extra={
                "fields": {
                    "alert": payload["rule_name"],
                    "alert_kind": payload["kind"],
                    "severity": payload["severity"],
                    "dedup_key": payload["dedup_key"],
                    "value": payload["value"],
                }
            },
        )
        return Outcome(True, detail="logged")


Notifiers = Mapping[Channel, Notifier]
