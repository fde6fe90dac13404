"""The notification outbox's lease against a real receiver that hangs (pytest-httpserver, threaded)
and two dispatchers on the real database: a dispatcher whose lease ran out while the receiver
held its request cannot record over the dispatcher that claimed the notification after it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from werkzeug import Request, Response

from services.control.domain.alert_messages import sample_payload
from services.control.domain.alerts import Channel, NotificationKind
from services.control.notifiers import SlackNotifier
from services.control.storage.unit import transactions
from services.control.usecases.alert_delivery import NotificationDispatcher, RetryPolicy
from shared.db.engine import create_session_factory

SLACK = "/slack/hook"


class Tally:
    """The dispatcher's counters, kept to be read."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, Channel]] = []

    def delivered(self, channel: Channel) -> None:
        self.counted.append(("delivered", channel))

    def failed(self, channel: Channel) -> None:
        self.counted.append(("failed", channel))

    def lease_lost(self, channel: Channel) -> None:
        self.counted.append(("lease_lost", channel))


class HangingReceiver:
    """Holds the first request until released (then answers 504, a retryable failure); answers
    every later one at once."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Request) -> Response:
        if not self.arrived.is_set():
            self.arrived.set()
            self.release.wait(timeout=60)  # only a bound, should the test fail before releasing
            return Response("gateway timeout", status=504)
        return Response("ok")


@pytest.fixture
def hanging() -> Iterator[tuple[HTTPServer, HangingReceiver]]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    receiver = HangingReceiver()
    server.expect_request(SLACK, method="POST").respond_with_handler(receiver)
    server.start()
    try:
        yield server, receiver
    finally:
        receiver.release.set()
        server.clear()
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as http:
        yield http


def dispatcher(
    db_engine: AsyncEngine, client: httpx.AsyncClient, url: str, tally: Tally
) -> NotificationDispatcher:
    """A control replica's dispatcher, as ``build_alerts`` makes it, retrying at once."""
    return NotificationDispatcher(
        transactions=transactions(create_session_factory(db_engine)),
        notifiers={Channel.SLACK: SlackNotifier(client=client, webhook_url=url)},
        policy=RetryPolicy(max_attempts=3, base_seconds=0.01),
        counters=tally,
    )


async def outbox(db_engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with db_engine.connect() as connection:
        notifications = await connection.execute(
            text("SELECT status, attempts, claim_token IS NULL FROM alert_notifications")
        )
        attempts = await connection.execute(
            text("SELECT attempt, outcome FROM alert_notification_attempts ORDER BY id")
        )
        return [*(tuple(r) for r in notifications), *(tuple(r) for r in attempts)]


async def test_a_dispatcher_that_outlived_its_lease_cannot_settle_what_another_claimed(
    db_engine: AsyncEngine,
    client: httpx.AsyncClient,
    hanging: tuple[HTTPServer, HangingReceiver],
) -> None:
    server, receiver = hanging
    async with transactions(create_session_factory(db_engine))() as unit:
        await unit.alerts.enqueue(
            alert_id=None,
            rule_name="test",
            channel=Channel.SLACK,
            kind=NotificationKind.TEST,
            payload=sample_payload("hi", now=datetime.now(UTC)),
        )
    slow_tally, other_tally = Tally(), Tally()
    slow = dispatcher(db_engine, client, server.url_for(SLACK), slow_tally)
    other = dispatcher(db_engine, client, server.url_for(SLACK), other_tally)

    slow_delivery = asyncio.create_task(slow.deliver())
    await asyncio.to_thread(receiver.arrived.wait, 60)  # the receiver holds the slow one's post
    async with db_engine.begin() as connection:
        # As if the lease had run out while the receiver held the request.
        await connection.execute(
            text("UPDATE alert_notifications SET claimed_until = now() - interval '1 second'")
        )
    reclaimed = await other.deliver()
    [settled] = reclaimed.results
    assert (settled.delivered, settled.attempts, settled.lease_lost) == (True, 1, False)
    assert other_tally.counted == [("delivered", Channel.SLACK)]

    receiver.release.set()
    late = await slow_delivery
    [lost] = late.results
    assert lost.lease_lost
    assert (late.sent, late.failed) == (0, 0)
    assert slow_tally.counted == [("lease_lost", Channel.SLACK)]
    # The slow one neither recorded its 504 nor retried: the other claim's delivery stands.
    assert len(server.log) == 2
    assert await outbox(db_engine) == [(1, 1, True), (1, "delivered")]
