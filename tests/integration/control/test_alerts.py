"""Alerting against real receivers: PagerDuty and Slack over HTTP (pytest-httpserver), e-mail over
SMTP (aiosmtpd); rules, states, silences, history, retries, two replicas, rollout safeguards.

Time passes by moving the recorded timestamps back (``age``): every replica judges ``for``,
``keep_firing_for`` and the repeat interval by the database's clock against those columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import grpc
import httpx
import pytest
from aiosmtpd.controller import Controller
from google.protobuf.duration_pb2 import Duration
from pytest_httpserver import HTTPServer
from reviewlearn.control.v1 import control_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from werkzeug import Request, Response

from services.control.domain.alerts import AlertRule, Channel, Severity
from services.control.domain.changes import Action
from services.control.server import build_alerts
from services.control.settings import ControlSettings
from services.control.storage.alert_repository import AlertRepository
from services.control.storage.audit_repository import AuditRepository
from services.control.storage.unit import ControlUnit
from services.control.usecases.alerts import AlertService
from services.control.usecases.gates import AuditEntry
from shared.db.engine import create_session_factory
from tests.conftest import TOKENS_ENV, RunningService, StartService, auth, free_port
from tests.integration.control.conftest import (
    ControlStub,
    eventually,
    reason_of,
    start_control,
    violations,
)

RULE = "BacklogHigh"
PD, SLACK = "/pagerduty/v2/enqueue", "/slack/hook"
FIRING, PENDING, RESOLVED = (
    control_pb2.ALERT_STATE_FIRING,
    control_pb2.ALERT_STATE_PENDING,
    control_pb2.ALERT_STATE_RESOLVED,
)


def minutes(value: float) -> Duration:
    return Duration(seconds=int(value * 60))


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.busy = 0
        """Answer this many messages with a transient 451 first."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.busy:
            self.busy -= 1
            return "451 4.3.0 try again later"
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
async def clean_rules(db_engine: AsyncEngine) -> None:
    """Only the rules a test writes: the seeded ones would evaluate this machine's replicas."""
    async with db_engine.begin() as connection:
        await connection.execute(text("DELETE FROM alert_rules"))


def receiver_settings(httpserver: HTTPServer, **overrides: object) -> dict[str, object]:
    return {
        "alert_pagerduty_url": httpserver.url_for(PD),
        "alert_pagerduty_routing_key": "routing-key-1",
        "alert_slack_webhook_url": httpserver.url_for(SLACK),
        "alert_retry_base_seconds": 0.01,
        "alert_max_attempts": 3,
        "alert_evaluation_seconds": 3600.0,  # only EvaluateAlerts evaluates in these tests
        **overrides,
    }


@pytest.fixture
async def alerting(
    start_service: StartService, httpserver: HTTPServer, clean_rules: None
) -> RunningService:
    httpserver.expect_request(PD, method="POST").respond_with_json({"status": "success"}, 202)
    httpserver.expect_request(SLACK, method="POST").respond_with_data("ok")
    return await start_control(start_service, **receiver_settings(httpserver))


@pytest.fixture
def stub(alerting: RunningService) -> ControlStub:
    return ControlStub(alerting.channel)


async def upsert(
    stub: ControlStub, request_id: str = "", **fields: Any
) -> control_pb2.UpsertAlertRuleResponse:
    rule = {
        "name": RULE,
        "signal": "feedback_backlog",
        "comparison": ">",
        "threshold": 1000.0,
        "for_duration": minutes(5),
        "severity": control_pb2.ALERT_SEVERITY_CRITICAL,
        "channels": [control_pb2.CHANNEL_PAGERDUTY, control_pb2.CHANNEL_SLACK],
        "repeat_interval": minutes(60),
        "enabled": True,
        "annotations": {"summary": "backlog {{ value }}", "runbook_url": "docs/x.md#backlog"},
        "labels": {"team": "platform"},
        **fields,
    }
    return await stub.UpsertAlertRule(
        control_pb2.UpsertAlertRuleRequest(
            request_id=request_id, rule=control_pb2.AlertRule(**rule)
        ),
        metadata=auth("operator"),
    )


async def set_backlog(db_engine: AsyncEngine, backlog: int, replica: str = "feedback@t") -> None:
    """A live feedback replica's heartbeat reporting ``backlog`` (as shared.heartbeat writes)."""
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO replica_heartbeats (replica_id, service, applied_gate_version, "
                "started_at, heartbeat_at, signals) VALUES (:id, 'feedback', 0, now(), "
                "now() + interval '1 hour', CAST(:signals AS jsonb)) ON CONFLICT (replica_id) "
                "DO UPDATE SET signals = excluded.signals, heartbeat_at = excluded.heartbeat_at"
            ),
            {"id": replica, "signals": json.dumps({"feedback_queue_size": backlog})},
        )


async def age(db_engine: AsyncEngine, minutes_back: float) -> None:
    """Moves every alert's recorded times back, as if that long had passed."""
    shift = f"interval '{float(minutes_back)} minutes'"
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE alert_events SET active_since = active_since - {shift}, "
                f"fired_at = fired_at - {shift}, cleared_since = cleared_since - {shift}, "
                f"last_notified_at = last_notified_at - {shift}"
            )
        )


async def evaluate(stub: ControlStub) -> control_pb2.EvaluateAlertsResponse:
    return await stub.EvaluateAlerts(control_pb2.EvaluateAlertsRequest(), metadata=auth("operator"))


def posted(httpserver: HTTPServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(request.data) for request, _ in httpserver.log if request.path == path]


async def attempts(db_engine: AsyncEngine) -> list[tuple[str, str, int, str, int | None]]:
    async with db_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT n.channel, n.kind, a.attempt, a.outcome, a.status_code "
                "FROM alert_notification_attempts a JOIN alert_notifications n "
                "ON n.id = a.notification_id ORDER BY a.id"
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def history(stub: ControlStub, **fields: Any) -> list[control_pb2.Alert]:
    response = await stub.ListAlertHistory(
        control_pb2.ListAlertHistoryRequest(**fields), metadata=auth("reader")
    )
    return list(response.alerts)


# ------------------------------------------------------------------ states and notifications


async def test_a_rule_fires_only_after_for_then_resolves_with_the_same_dedup_key(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    created = await upsert(stub)
    assert created.created
    await set_backlog(db_engine, 5000)

    first = await evaluate(stub)
    assert [(a.rule_name, a.state, a.previous_state) for a in first.alerts] == [
        (RULE, PENDING, control_pb2.ALERT_STATE_UNSPECIFIED)
    ]
    assert {s.name: (s.value, s.known) for s in first.signals}["feedback_backlog"] == (5000, True)
    assert (await evaluate(stub)).alerts == []  # still pending: `for` has not passed
    assert httpserver.log == []

    await age(db_engine, 6)
    fired = await evaluate(stub)
    assert [(a.state, a.previous_state) for a in fired.alerts] == [(FIRING, PENDING)]
    assert fired.notifications_sent == 2
    [trigger] = posted(httpserver, PD)
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == "routing-key-1"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == "backlog 5000"
    assert trigger["payload"]["source"] == "reviewlearn-control"
    assert trigger["links"] == [{"href": "docs/x.md#backlog", "text": "runbook"}]
    assert trigger["dedup_key"] == f"reviewlearn/{RULE}/{fired.alerts[0].alert_id}"
    [slack] = posted(httpserver, SLACK)
    assert slack["text"] == f"[CRITICAL] {RULE}: backlog 5000"

    active = await stub.ListActiveAlerts(
        control_pb2.ListActiveAlertsRequest(), metadata=auth("reader")
    )
    assert [(a.rule_name, a.state, a.labels["team"]) for a in active.alerts] == [
        (RULE, FIRING, "platform")
    ]

    await set_backlog(db_engine, 10)
    resolved = await evaluate(stub)
    assert [(a.state, a.previous_state) for a in resolved.alerts] == [(RESOLVED, FIRING)]
    resolve = posted(httpserver, PD)[-1]
    assert resolve == {
        "routing_key": "routing-key-1",
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    assert posted(httpserver, SLACK)[-1]["text"].startswith(f"[RESOLVED] {RULE}")
    [alert] = await history(stub)
    assert alert.state == RESOLVED
    assert alert.fired_time.seconds
    assert alert.resolved_time.seconds
    assert alert.notifications == 1
    assert (
        await stub.ListActiveAlerts(control_pb2.ListActiveAlertsRequest(), metadata=auth("reader"))
    ).alerts == []


async def test_keep_firing_for_holds_a_flapping_alert_and_repeat_re_notifies(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(
        stub,
        for_duration=minutes(0),
        keep_firing_for=minutes(10),
        channels=[control_pb2.CHANNEL_PAGERDUTY],
    )
    await set_backlog(db_engine, 5000)
    assert [a.state for a in (await evaluate(stub)).alerts] == [FIRING]

    await set_backlog(db_engine, 0)
    assert (await evaluate(stub)).alerts == []  # below, but not for keep_firing_for yet
    await set_backlog(db_engine, 5000)
    await age(db_engine, 30)
    assert (await evaluate(stub)).alerts == []  # back above: the same firing alert
    assert len(posted(httpserver, PD)) == 1  # within the repeat interval (60 min)
    await age(db_engine, 31)
    repeated = await evaluate(stub)
    assert (repeated.alerts, repeated.notifications_sent) == ([], 1)  # a repeat, no transition
    keys = [(e["event_action"], e["dedup_key"]) for e in posted(httpserver, PD)]
    assert keys == [keys[0], keys[0]]
    assert keys[0][0] == "trigger"

    await set_backlog(db_engine, 0)
    assert (await evaluate(stub)).alerts == []
    await age(db_engine, 11)
    assert [a.state for a in (await evaluate(stub)).alerts] == [RESOLVED]
    assert posted(httpserver, PD)[-1]["event_action"] == "resolve"


async def test_a_pending_alert_that_clears_resolves_without_a_notification(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(stub)
    await set_backlog(db_engine, 5000)
    await evaluate(stub)
    await set_backlog(db_engine, 0)
    assert [(a.state, a.previous_state) for a in (await evaluate(stub)).alerts] == [
        (RESOLVED, PENDING)
    ]
    assert httpserver.log == []
    [alert] = await history(stub)
    assert not alert.HasField("fired_time")


async def test_silenced_alerts_stay_quiet_but_are_kept_in_history(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(stub, for_duration=minutes(0))
    silence = (
        await stub.CreateSilence(
            control_pb2.CreateSilenceRequest(
                matchers={"team": "platform"}, duration=minutes(60), comment="maintenance"
            ),
            metadata=auth("operator"),
        )
    ).silence
    assert silence.active
    assert silence.created_by
    await set_backlog(db_engine, 5000)
    fired = await evaluate(stub)
    assert [(a.state, a.silenced) for a in fired.alerts] == [(FIRING, True)]
    await set_backlog(db_engine, 0)
    resolved = await evaluate(stub)  # resolves while silenced
    assert [(a.state, a.silenced) for a in resolved.alerts] == [(RESOLVED, True)]
    assert httpserver.log == []
    assert [(a.state, a.silenced) for a in await history(stub)] == [(RESOLVED, True)]

    listed = await stub.ListSilences(control_pb2.ListSilencesRequest(), metadata=auth("reader"))
    assert [s.silence_id for s in listed.silences] == [silence.silence_id]
    expired = await stub.ExpireSilence(
        control_pb2.ExpireSilenceRequest(silence_id=silence.silence_id), metadata=auth("operator")
    )
    assert not expired.silence.active
    assert expired.silence.HasField("expire_time")
    assert not (
        await stub.ListSilences(control_pb2.ListSilencesRequest(), metadata=auth("reader"))
    ).silences

    await set_backlog(db_engine, 5000)
    assert (await evaluate(stub)).notifications_sent == 2  # no longer silenced
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ExpireSilence(
            control_pb2.ExpireSilenceRequest(silence_id=999), metadata=auth("operator")
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_retried_create_silence_is_judged_active_by_the_clock_of_the_retry(
    stub: ControlStub, db_engine: AsyncEngine
) -> None:
    await upsert(stub)
    request = control_pb2.CreateSilenceRequest(
        rule_names=[RULE], duration=Duration(seconds=1), comment="short", request_id="s-1"
    )
    first = await stub.CreateSilence(request, metadata=auth("operator"))
    assert first.silence.active

    async def ended() -> bool:
        async with db_engine.connect() as connection:
            return bool(await connection.scalar(text("SELECT now() > ends_at FROM alert_silences")))

    await eventually(ended, what="the silence's end")
    retried = await stub.CreateSilence(request, metadata=auth("operator"))
    assert retried.silence.silence_id == first.silence.silence_id
    assert not retried.silence.active


async def test_a_silence_that_ends_lets_a_firing_alert_notify(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(stub, for_duration=minutes(0), channels=[control_pb2.CHANNEL_SLACK])
    await stub.CreateSilence(
        control_pb2.CreateSilenceRequest(rule_names=[RULE], duration=minutes(60)),
        metadata=auth("operator"),
    )
    await set_backlog(db_engine, 5000)
    await evaluate(stub)
    assert httpserver.log == []
    async with db_engine.begin() as connection:
        await connection.execute(text("UPDATE alert_silences SET ends_at = now() - interval '1 s'"))
    again = await evaluate(stub)
    assert again.notifications_sent == 1
    assert [a.silenced for a in await history(stub)] == [False]


# ------------------------------------------------------------------ delivery


async def test_a_receiver_answering_500_twice_then_200_gets_it_with_three_attempts_recorded(
    start_service: StartService, httpserver: HTTPServer, db_engine: AsyncEngine, clean_rules: None
) -> None:
    answers = iter([500, 500, 200])

    def flaky(request: Request) -> Response:
        return Response("ok", status=next(answers))

    httpserver.expect_request(SLACK, method="POST").respond_with_handler(flaky)
    stub = ControlStub(
        (await start_control(start_service, **receiver_settings(httpserver))).channel
    )
    await upsert(stub, for_duration=minutes(0), channels=[control_pb2.CHANNEL_SLACK])
    await set_backlog(db_engine, 5000)
    result = await evaluate(stub)
    assert (result.notifications_sent, result.notifications_failed) == (1, 0)
    assert await attempts(db_engine) == [
        ("slack", "firing", 1, "retry", 500),
        ("slack", "firing", 2, "retry", 500),
        ("slack", "firing", 3, "delivered", 200),
    ]
    assert len(posted(httpserver, SLACK)) == 3


async def test_a_receiver_that_is_down_is_recorded_and_evaluation_goes_on(
    start_service: StartService, httpserver: HTTPServer, db_engine: AsyncEngine, clean_rules: None
) -> None:
    settings = receiver_settings(
        httpserver, alert_slack_webhook_url=f"http://127.0.0.1:{free_port()}/down"
    )
    httpserver.expect_request(PD, method="POST").respond_with_json({"status": "success"}, 202)
    stub = ControlStub((await start_control(start_service, **settings)).channel)
    await upsert(
        stub,
        for_duration=minutes(0),
        channels=[
            control_pb2.CHANNEL_SLACK,
            control_pb2.CHANNEL_PAGERDUTY,
            control_pb2.CHANNEL_LOG,
        ],
    )
    await set_backlog(db_engine, 5000)
    result = await evaluate(stub)
    assert [a.state for a in result.alerts] == [FIRING]
    assert (result.notifications_sent, result.notifications_failed) == (2, 1)
    slack = [a for a in await attempts(db_engine) if a[0] == "slack"]
    assert [a[2:] for a in slack] == [(1, "retry", None), (2, "retry", None), (3, "failed", None)]
    async with db_engine.connect() as connection:
        status = dict(
            (
                await connection.execute(text("SELECT channel, status FROM alert_notifications"))
            ).all()
        )
    assert status == {"slack": 2, "pagerduty": 1, "log": 1}  # failed, delivered, delivered
    await set_backlog(db_engine, 0)
    assert [a.state for a in (await evaluate(stub)).alerts] == [RESOLVED]


async def test_email_goes_over_smtp(
    start_service: StartService,
    httpserver: HTTPServer,
    db_engine: AsyncEngine,
    clean_rules: None,
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    stub = ControlStub(
        (
            await start_control(
                start_service,
                **receiver_settings(
                    httpserver,
                    alert_smtp_host="127.0.0.1",
                    alert_smtp_port=port,
                    alert_smtp_to="oncall@example.com, lead@example.com",
                    alert_smtp_from="alerts@example.com",
                ),
            )
        ).channel
    )
    await upsert(stub, for_duration=minutes(0), channels=[control_pb2.CHANNEL_EMAIL])
    await set_backlog(db_engine, 5000)
    assert (await evaluate(stub)).notifications_sent == 1
    [mail] = mailbox.messages
    assert mail["Subject"] == f"[CRITICAL] {RULE}: backlog 5000"
    assert mail["To"] == "oncall@example.com, lead@example.com"
    assert "runbook:   docs/x.md#backlog" in mail.get_payload()  # type: ignore[operator]
    mailbox.busy = 2  # SMTP 4xx is transient: retried, every attempt recorded
    test = await stub.SendTestNotification(
        control_pb2.SendTestNotificationRequest(channel=control_pb2.CHANNEL_EMAIL, message="hello"),
        metadata=auth("operator"),
    )
    assert (test.delivered, test.attempts) == (True, 3)
    assert mailbox.messages[-1]["Subject"] == "[TEST] test: hello"
    assert [a[1:] for a in await attempts(db_engine)][-3:] == [
        ("test", 1, "retry", 451),
        ("test", 2, "retry", 451),
        ("test", 3, "delivered", 250),
    ]


async def test_send_test_notification_per_channel(
    start_service: StartService, httpserver: HTTPServer, clean_rules: None
) -> None:
    httpserver.expect_request(SLACK, method="POST").respond_with_data("ok")
    stub = ControlStub(
        (
            await start_control(
                start_service, **receiver_settings(httpserver, alert_pagerduty_routing_key=None)
            )
        ).channel
    )
    slack = await stub.SendTestNotification(
        control_pb2.SendTestNotificationRequest(channel=control_pb2.CHANNEL_SLACK, message="hi"),
        metadata=auth("operator"),
    )
    assert (slack.delivered, slack.attempts) == (True, 1)
    assert posted(httpserver, SLACK)[0]["text"] == "[TEST] test: hi"
    pagerduty = await stub.SendTestNotification(
        control_pb2.SendTestNotificationRequest(channel=control_pb2.CHANNEL_PAGERDUTY),
        metadata=auth("operator"),
    )
    assert not pagerduty.delivered
    assert "not configured" in pagerduty.detail
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendTestNotification(
            control_pb2.SendTestNotificationRequest(), metadata=auth("operator")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_two_replicas_evaluating_at_once_send_one_set_of_notifications(
    start_service: StartService, httpserver: HTTPServer, db_engine: AsyncEngine, clean_rules: None
) -> None:
    httpserver.expect_request(PD, method="POST").respond_with_json({"status": "success"}, 202)
    httpserver.expect_request(SLACK, method="POST").respond_with_data("ok")
    replicas = [
        ControlStub((await start_control(start_service, **receiver_settings(httpserver))).channel)
        for _ in range(2)
    ]
    await upsert(replicas[0], for_duration=minutes(0))
    await set_backlog(db_engine, 5000)
    for _ in range(3):
        await asyncio.gather(*(evaluate(stub) for stub in replicas for _ in range(3)))
    assert len(posted(httpserver, PD)) == 1
    assert len(posted(httpserver, SLACK)) == 1
    assert len(await history(replicas[1])) == 1


# ------------------------------------------------------------------ rules


async def test_bad_rules_are_invalid_argument(stub: ControlStub) -> None:
    cases = {
        "rule.signal": {"signal": "no_such_signal"},
        "rule.threshold": {"threshold": math.nan},
        "rule.for_duration": {"for_duration": Duration(seconds=-60)},
        "rule.keep_firing_for": {"keep_firing_for": Duration(seconds=1, nanos=500_000_000)},
        "rule.comparison": {"comparison": "=="},
        "rule.channels": {"channels": []},
        "rule.name": {"name": "has space"},
        "rule.labels[severity]": {"labels": {"severity": "x"}},
        "rule.safeguard": {"safeguard": True, "severity": control_pb2.ALERT_SEVERITY_WARNING},
    }
    for field, change in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upsert(stub, **change)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations(caught.value), (field, violations(caught.value))


async def test_rules_are_listed_updated_and_audited(stub: ControlStub) -> None:
    assert (await upsert(stub)).created
    updated = await upsert(stub, threshold=2000.0, request_id="r-1")
    assert not updated.created
    replay = await upsert(stub, threshold=2000.0, request_id="r-1")
    assert not replay.created
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upsert(stub, threshold=3000.0, request_id="r-1")
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS  # the id, reused for another rule
    listed = await stub.ListAlertRules(control_pb2.ListAlertRulesRequest(), metadata=auth("reader"))
    assert [(r.name, r.threshold) for r in listed.rules] == [(RULE, 2000.0)]
    assert "feedback_backlog" in {s.name for s in listed.signals}
    events = await stub.ListAuditEvents(
        control_pb2.ListAuditEventsRequest(action="alert_rule.upsert"), metadata=auth("reader")
    )
    assert len(events.events) == 2
    assert json.loads(events.events[0].before_json)["threshold"] == 1000.0


async def test_history_is_paged(stub: ControlStub, db_engine: AsyncEngine) -> None:
    await upsert(stub, for_duration=minutes(0), channels=[control_pb2.CHANNEL_LOG])
    for _ in range(5):
        await set_backlog(db_engine, 5000)
        await evaluate(stub)
        await set_backlog(db_engine, 0)
        await evaluate(stub)
    seen: list[int] = []
    token = ""
    while True:
        page = await stub.ListAlertHistory(
            control_pb2.ListAlertHistoryRequest(rule_name=RULE, page_size=2, page_token=token),
            metadata=auth("reader"),
        )
        seen += [a.alert_id for a in page.alerts]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == 5


# ------------------------------------------------------------------ rollout safeguards


async def test_a_firing_safeguard_refuses_advance_and_pauses_the_rollout(
    stub: ControlStub, db_engine: AsyncEngine
) -> None:
    await upsert(stub, for_duration=minutes(0), safeguard=True, channels=[control_pb2.CHANNEL_LOG])
    await set_backlog(db_engine, 5000)
    await evaluate(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdvanceRollout(
            control_pb2.AdvanceRolloutRequest(reason="go", force=True), metadata=auth("operator")
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "SAFEGUARD_FIRING"
    paused = await stub.ListAuditEvents(
        control_pb2.ListAuditEventsRequest(action="rollout.pause"), metadata=auth("reader")
    )
    assert [e.actor for e in paused.events] == ["alerting"]

    await set_backlog(db_engine, 0)
    await evaluate(stub)
    advanced = await stub.AdvanceRollout(
        control_pb2.AdvanceRolloutRequest(reason="go", force=True), metadata=auth("operator")
    )
    assert advanced.current.phase == 1


async def test_a_safeguard_can_engage_the_kill_switch(
    start_service: StartService, httpserver: HTTPServer, db_engine: AsyncEngine, clean_rules: None
) -> None:
    stub = ControlStub(
        (
            await start_control(
                start_service, **receiver_settings(httpserver, alert_safeguard_action="kill_switch")
            )
        ).channel
    )
    await upsert(stub, for_duration=minutes(0), safeguard=True, channels=[control_pb2.CHANNEL_LOG])
    await set_backlog(db_engine, 5000)
    await evaluate(stub)
    gates = await stub.GetFeatureGates(
        control_pb2.GetFeatureGatesRequest(), metadata=auth("reader")
    )
    assert gates.snapshot.kill_switch_engaged
    assert gates.snapshot.kill_switch_updated_by == "alerting"
    assert RULE in gates.snapshot.kill_switch_reason


class InjectedFailure(Exception):
    """The audit write failing after its row was flushed, as a dropped connection would."""


class AuditFailingOn(AuditRepository):
    """The real audit repository, failing on one action once it has written the row."""

    def __init__(self, session: AsyncSession, action: str) -> None:
        super().__init__(session)
        self._action = action

    async def record(self, entry: AuditEntry) -> None:
        await super().record(entry)
        if entry.action == self._action:
            raise InjectedFailure(entry.action)


@contextlib.asynccontextmanager
async def alert_service(
    db_engine: AsyncEngine, database_url: str, *, failing_on: str | None, safeguard_action: str
) -> AsyncIterator[tuple[AlertService, list[int]]]:
    """The server's alerting part on the real database, its audit failing on ``failing_on``;
    with the gate versions it announced."""
    sessions = create_session_factory(db_engine)

    @contextlib.asynccontextmanager
    async def units() -> AsyncIterator[ControlUnit]:
        async with sessions.begin() as session:
            unit = ControlUnit(session)
            if failing_on is not None:
                unit.audit = AuditFailingOn(session, failing_on)
            yield unit

    announced: list[int] = []

    async def announce(version: int) -> None:
        announced.append(version)

    settings = ControlSettings(
        database_url=database_url,
        tokens=TOKENS_ENV,
        alert_safeguard_action=safeguard_action,  # type: ignore[arg-type]
    )
    service, client = build_alerts(settings, units, announce)
    try:
        yield service, announced
    finally:
        await client.aclose()


SAFEGUARD = AlertRule(
    name=RULE,
    signal="feedback_backlog",
    comparison=">",
    threshold=1000.0,
    for_duration=timedelta(0),
    severity=Severity.CRITICAL,
    channels=(Channel.LOG,),
    safeguard=True,
)


async def rollout_state(db_engine: AsyncEngine) -> dict[str, Any]:
    """What pauses the rollout (firing safeguards, the kill switch) and its audit rows."""
    async with AsyncSession(db_engine) as session:
        firing = await AlertRepository(session).firing_safeguards()
        gate = (
            await session.execute(text("SELECT version, kill_switch_engaged FROM gate_state"))
        ).one()
        audit = await session.execute(
            text("SELECT action, after FROM audit_events WHERE actor = 'alerting' ORDER BY id")
        )
        queued = await session.scalar(text("SELECT count(*) FROM alert_notifications"))
    return {
        "firing": firing,
        "gate": tuple(gate),
        "audit": [(action, dict(after)) for action, after in audit],
        "queued": queued,
    }


@pytest.mark.parametrize(
    ("safeguard_action", "failing_on"),
    [("pause", Action.PAUSE_ROLLOUT), ("kill_switch", Action.SET_KILL_SWITCH)],
)
async def test_a_safeguard_pause_and_its_audit_row_commit_together_or_not_at_all(
    db_engine: AsyncEngine,
    database_url: str,
    clean_rules: None,
    safeguard_action: str,
    failing_on: str,
) -> None:
    async with alert_service(
        db_engine, database_url, failing_on=failing_on, safeguard_action=safeguard_action
    ) as (failing, announced):
        await failing.upsert_rule(SAFEGUARD, request_id=None, actor="operator")
        await set_backlog(db_engine, 5000)
        with pytest.raises(InjectedFailure):
            await failing.evaluate(wait=True)
        # Nothing of the evaluation is left: no firing safeguard without its audit row.
        assert await rollout_state(db_engine) == {
            "firing": [], "gate": (0, False), "audit": [], "queued": 0
        }  # fmt: skip
        assert announced == []

    async with alert_service(
        db_engine, database_url, failing_on=None, safeguard_action=safeguard_action
    ) as (healthy, announced):
        evaluation = await healthy.evaluate(wait=True)
        assert evaluation is not None
        [fired] = evaluation.transitions
        state = await rollout_state(db_engine)
        assert state["firing"] == [RULE]
        assert state["audit"][0] == (
            Action.PAUSE_ROLLOUT,
            {"alert_id": fired.alert.alert_id, "action": safeguard_action},
        )
        if safeguard_action == "kill_switch":
            assert state["gate"] == (1, True)
            assert [action for action, _ in state["audit"]] == [
                Action.PAUSE_ROLLOUT,
                Action.SET_KILL_SWITCH,
            ]
            assert announced == [1]
        else:
            assert state["gate"] == (0, False)
            assert len(state["audit"]) == 1
            assert announced == []


async def test_a_safeguard_resume_and_its_audit_row_commit_together_or_not_at_all(
    db_engine: AsyncEngine, database_url: str, clean_rules: None
) -> None:
    async with alert_service(
        db_engine, database_url, failing_on=None, safeguard_action="pause"
    ) as (healthy, _):
        await healthy.upsert_rule(SAFEGUARD, request_id=None, actor="operator")
        await set_backlog(db_engine, 5000)
        await healthy.evaluate(wait=True)
        await set_backlog(db_engine, 0)
        async with alert_service(
            db_engine, database_url, failing_on=Action.RESUME_ROLLOUT, safeguard_action="pause"
        ) as (failing, _):
            with pytest.raises(InjectedFailure):
                await failing.evaluate(wait=True)
        # Still paused, and still only the pause audited: the resolve rolled back with its row.
        state = await rollout_state(db_engine)
        assert state["firing"] == [RULE]
        assert [action for action, _ in state["audit"]] == [Action.PAUSE_ROLLOUT]

        await healthy.evaluate(wait=True)
        state = await rollout_state(db_engine)
        assert state["firing"] == []
        assert [action for action, _ in state["audit"]] == [
            Action.PAUSE_ROLLOUT,
            Action.RESUME_ROLLOUT,
        ]


# ------------------------------------------------------------------ signals


async def test_job_signals_come_from_job_runs(stub: ControlStub, db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        # succeeded, succeeded, failed, partial; the integrity check ran and found a problem
        runs = [("fold", 2, None), ("fold", 2, None), ("tune", 3, None), ("paths", 5, None)]
        runs.append(("validate_data_integrity", 2, False))
        for name, status, check_passed in runs:
            await connection.execute(
                text(
                    "INSERT INTO job_runs (job_name, frequency, status, finished_at, check_passed) "
                    "VALUES (:name, 2, :status, now(), :check_passed)"
                ),
                {"name": name, "status": status, "check_passed": check_passed},
            )
    values = {s.name: (s.value, s.known) for s in (await evaluate(stub)).signals}
    assert values["learning_job_failure_rate"] == (pytest.approx(2 / 4), True)
    assert values["data_integrity_failed"] == (1.0, True)
    assert values["daily_jobs_finished"] == (5.0, True)
    assert values["confidence_threshold_age_hours"] == (0.0, False)


async def test_two_replicas_with_periodic_loops_notify_once_and_export_metrics(
    start_service: StartService, httpserver: HTTPServer, db_engine: AsyncEngine, clean_rules: None
) -> None:
    httpserver.expect_request(SLACK, method="POST").respond_with_data("ok")
    first = await start_control(start_service, **receiver_settings(httpserver))
    await upsert(
        ControlStub(first.channel), for_duration=minutes(0), channels=[control_pb2.CHANNEL_SLACK]
    )
    await set_backlog(db_engine, 5000)
    fast = receiver_settings(httpserver, alert_evaluation_seconds=0.05)
    looping = [await start_control(start_service, **fast) for _ in range(2)]

    async def notified() -> bool:
        return len(posted(httpserver, SLACK)) >= 1

    await eventually(notified, what="a periodic evaluation notifying")
    await asyncio.sleep(0.5)  # ten more rounds of both loops: a second notification would show
    assert len(posted(httpserver, SLACK)) == 1
    assert len(await history(ControlStub(first.channel))) == 1

    texts = []
    async with httpx.AsyncClient() as http:
        for replica in looping:
            texts.append(
                (await http.get(f"http://127.0.0.1:{replica.runtime.metrics_port}/metrics")).text
            )
    metrics = "\n".join(texts)
    # One OpenTelemetry provider serves every runtime of this test process, so the series are
    # there; their values add up over the tests.
    assert re.search(
        r'^alert_notifications_sent_total\{[^}]*channel="slack"[^}]*\} [1-9]', metrics, re.M
    )
    assert re.search(r'^alerts_firing\{[^}]*severity="critical"[^}]*\} [1-9]', metrics, re.M)
    assert re.search(
        r'^alert_signal_value\{[^}]*signal="feedback_backlog"[^}]*\} 5000', metrics, re.M
    )


async def test_an_alert_notified_before_a_silence_still_resolves_its_incident(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(stub, for_duration=minutes(0), channels=[control_pb2.CHANNEL_PAGERDUTY])
    await set_backlog(db_engine, 5000)
    await evaluate(stub)
    await stub.CreateSilence(
        control_pb2.CreateSilenceRequest(rule_names=[RULE], duration=minutes(60)),
        metadata=auth("operator"),
    )
    await age(db_engine, 120)
    assert (await evaluate(stub)).notifications_sent == 0  # the repeat is silenced
    await set_backlog(db_engine, 0)
    assert (await evaluate(stub)).notifications_sent == 1
    trigger, resolve = posted(httpserver, PD)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"]


async def test_an_info_rule_notifies_once_and_resolves_quietly(
    stub: ControlStub, db_engine: AsyncEngine, httpserver: HTTPServer
) -> None:
    await upsert(
        stub,
        severity=control_pb2.ALERT_SEVERITY_INFO,
        for_duration=minutes(0),
        channels=[control_pb2.CHANNEL_SLACK],
    )
    await set_backlog(db_engine, 5000)
    assert (await evaluate(stub)).notifications_sent == 1
    await set_backlog(db_engine, 0)
    resolved = await evaluate(stub)
    assert [a.state for a in resolved.alerts] == [RESOLVED]
    assert resolved.notifications_sent == 0
    assert [m["text"].split("]")[0] for m in posted(httpserver, SLACK)] == ["[INFO"]
