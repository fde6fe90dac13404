"""Delivery of the notification outbox: claim, send with retries and backoff, record every attempt.

No transaction stays open while a receiver is called: a claim leases the rows to this replica
(``claimed_until``; ``FOR UPDATE SKIP LOCKED`` so two replicas never take the same row), each
attempt is recorded in its own short transaction, and a replica that dies mid-delivery leaves
its rows to whichever replica claims them after the lease. A replica that is only slow (a
receiver that hangs) may outlive its lease while another replica claims the row: every claim
carries a token, attempts and outcomes are recorded only under the row's current token, and the
replica that lost the lease stops there (counted and logged) instead of overwriting the other's
outcome. A receiver that is down costs only its own notifications: the others, and the
evaluation that queued them, go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

from services.control.domain.alert_messages import DeliveryStatus, QueuedNotification
from services.control.domain.alerts import Channel
from services.control.notifiers import Notifier, Outcome

log = logging.getLogger("reviewlearn.control.alerts")


class OutboxRepository(Protocol):
    async def claim(
        self, *, lease: timedelta, limit: int, only: Sequence[int] | None = None
    ) -> list[QueuedNotification]: ...
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
        """False, recording nothing, when ``claim`` no longer holds the notification."""
        ...

    async def finish(self, notification_id: int, *, claim: UUID, status: DeliveryStatus) -> bool:
        """False, changing nothing, when ``claim`` no longer holds the notification."""
        ...


class OutboxUnit(Protocol):
    @property
    def alerts(self) -> OutboxRepository: ...


class DeliveryCounters(Protocol):
    def delivered(self, channel: Channel) -> None: ...
    def failed(self, channel: Channel) -> None: ...
    def lease_lost(self, channel: Channel) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    lease: timedelta = timedelta(minutes=5)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return float(min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds))


@dataclass(frozen=True)
class Delivered:
    notification_id: int
    channel: Channel
    delivered: bool
    attempts: int
    detail: str
    lease_lost: bool = False
    """Another replica claimed the notification while this one was still delivering it: the
    outcome is that replica's to record (this one's last attempt is only logged)."""


@dataclass(frozen=True)
class DeliveryReport:
    results: tuple[Delivered, ...] = ()

    @property
    def sent(self) -> int:
        return sum(r.delivered and not r.lease_lost for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.delivered and not r.lease_lost for r in self.results)


class NotificationDispatcher:
    def __init__(
        self,
        *,
        transactions: Callable[[], AbstractAsyncContextManager[OutboxUnit]],
        notifiers: Mapping[Channel, Notifier],
        policy: RetryPolicy,
        counters: DeliveryCounters,
        batch: int = 100,
    ) -> None:
        self._transactions = transactions
        self._notifiers = notifiers
        self._policy = policy
        self._counters = counters
        self._batch = batch

    async def deliver(self, only: Sequence[int] | None = None) -> DeliveryReport:
        """Delivers what is pending (``only`` these ids when given); channels in parallel,
        each channel's notifications in order."""
        async with self._transactions() as unit:
            claimed = await unit.alerts.claim(
                lease=self._policy.lease, limit=self._batch, only=only
            )
        by_channel: dict[Channel, list[QueuedNotification]] = {}
        for item in claimed:
            by_channel.setdefault(item.channel, []).append(item)

        async def drain(items: list[QueuedNotification]) -> list[Delivered]:
            return [await self._deliver_one(item) for item in items]

        results = await asyncio.gather(*(drain(items) for items in by_channel.values()))
        return DeliveryReport(tuple(r for group in results for r in group))

    async def _deliver_one(self, item: QueuedNotification) -> Delivered:
        notifier = self._notifiers[item.channel]
        attempt = item.attempts
        outcome = Outcome(False, detail="no attempt")
        held = True  # this claim still holds the notification
        while attempt < self._policy.max_attempts:
            attempt += 1
            started = time.perf_counter()
            outcome = await self._attempt(notifier, item.payload)
            seconds = time.perf_counter() - started
            last = outcome.delivered or not outcome.retryable
            last = last or attempt >= self._policy.max_attempts
            held = await self._record(item, attempt, outcome, seconds, last=last)
            if last or not held:
                break
            await asyncio.sleep(self._policy.backoff(attempt))
        if held:
            status = DeliveryStatus.DELIVERED if outcome.delivered else DeliveryStatus.FAILED
            async with self._transactions() as unit:
                held = await unit.alerts.finish(
                    item.notification_id, claim=item.claim, status=status
                )
        return self._report(item, attempt, outcome, lease_lost=not held)

    def _report(
        self, item: QueuedNotification, attempt: int, outcome: Outcome, *, lease_lost: bool
    ) -> Delivered:
        """Counts and logs how the delivery ended. ``lease_lost``: the lease ran out and another
        replica claimed the notification; its attempts and outcome stand, this replica's last
        attempt is only logged (and it stopped retrying)."""
        fields = {
            "channel": str(item.channel),
            "notification_id": item.notification_id,
            "attempts": attempt,
            "detail": outcome.detail,
        }
        if lease_lost:
            self._counters.lease_lost(item.channel)
            log.warning(
                "alert notification lease lost to another claim; its outcome is not recorded here",
                extra={"fields": {**fields, "delivered": outcome.delivered}},
            )
        elif outcome.delivered:
            self._counters.delivered(item.channel)
        else:
            self._counters.failed(item.channel)
            log.warning("alert notification not delivered", extra={"fields": fields})
        return Delivered(item.notification_id, item.channel, outcome.delivered, attempt,
                         outcome.detail, lease_lost=lease_lost)  # fmt: skip

    async def _attempt(self, notifier: Notifier, payload: Mapping[str, Any]) -> Outcome:
        try:
            return await notifier.send(payload)
        except Exception as exc:  # a sender's bug must not stop the other notifications
            log.exception("alert sender failed")
            return Outcome(False, retryable=False, detail=f"{exc.__class__.__name__}: {exc}")

    async def _record(
        self,
        item: QueuedNotification,
        attempt: int,
        outcome: Outcome,
        seconds: float,
        *,
        last: bool,
    ) -> bool:
        """False when the claim no longer holds the notification (nothing recorded)."""
        label = outcome.label
        if last and not outcome.delivered:
            label = "failed"  # given up: nothing will retry it
        async with self._transactions() as unit:
            return await unit.alerts.record_attempt(
                item.notification_id,
                claim=item.claim,
                attempt=attempt,
                outcome=label,
                status_code=outcome.status_code,
                detail=outcome.detail,
                seconds=seconds,
            )
