"""Use cases of alerting: rules, evaluation (the periodic loop and EvaluateAlerts), silences,
test notifications, and the rollout safeguards.

An evaluation is one transaction under a transaction-scoped advisory lock, so only one control
replica evaluates at a time: it reads the signals, steps every rule's alert, stores the alerts,
queues their notifications in the outbox (``alert_notifications``) and applies the rollout
safeguards (the pause or resume audit row, the kill switch) — all or nothing: a crash leaves
no firing safeguard without its audit row, nor an audit row without its alert. The
outbox is delivered after the commit (``usecases/alert_delivery.py``). The periodic loop skips a
round while another replica holds the lock; EvaluateAlerts waits for it, then finds the state
that evaluation left, so two evaluations at once still send one set of notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.control.domain.alert_catalogue import SIGNAL_NAMES, SIGNALS, SignalSpec
from services.control.domain.alert_messages import alert_payload, sample_payload
from services.control.domain.alert_signals import JobFacts, ThresholdFacts, signal_values
from services.control.domain.alerts import (
    Alert,
    AlertRule,
    AlertState,
    Channel,
    NotificationKind,
    Severity,
    Silence,
    Transition,
    silenced,
    step,
    validate_rule,
)
from services.control.domain.changes import Action, KillSwitchChange
from services.control.domain.health import ServiceWindow
from services.control.domain.replicas import ReplicaView
from services.control.usecases.alert_delivery import (
    DeliveryReport,
    NotificationDispatcher,
    OutboxRepository,
)
from services.control.usecases.gates import (
    AfterCommit,
    AuditEntry,
    AuditRepository,
    GateRepository,
    RequestRepository,
    first_answer,
    keyed,
    remember,
    switch_kill_switch,
)
from shared.errors import FailedPrecondition, NotFound, Violations

ALERTING_ACTOR = "alerting"
MAX_SILENCE = timedelta(days=90)


class AlertRepository(OutboxRepository, Protocol):
    async def rules(self) -> list[AlertRule]: ...
    async def rule_for_update(self, name: str) -> AlertRule | None: ...
    async def put_rule(self, rule: AlertRule) -> None: ...
    async def lock_evaluation(self, *, wait: bool) -> bool: ...
    async def now(self) -> datetime: ...
    async def active_alerts(self) -> dict[str, Alert]: ...
    async def save_alert(self, alert: Alert) -> Alert: ...
    async def alerts(
        self, *, rule_name: str, active_only: bool, before_id: int | None, limit: int
    ) -> list[Alert]: ...
    async def add_silence(self, silence: Silence) -> Silence: ...
    async def silence_for_update(self, silence_id: int) -> Silence | None: ...
    async def expire_silence(self, silence_id: int, *, at: datetime) -> None: ...
    async def silences(self, *, now: datetime, include_expired: bool) -> list[Silence]: ...
    async def enqueue(
        self,
        *,
        alert_id: int | None,
        rule_name: str,
        channel: Channel,
        kind: NotificationKind,
        payload: dict[str, Any],
    ) -> int: ...


class SignalSources(Protocol):
    async def job_facts(
        self, *, now: datetime, window: timedelta, recent: timedelta, integrity_jobs: Sequence[str]
    ) -> JobFacts: ...
    async def threshold_facts(self, *, now: datetime, recent: timedelta) -> ThresholdFacts: ...


class ReplicaReads(Protocol):
    async def replicas(self, *, live_seconds: float, include_gone: bool) -> list[ReplicaView]: ...


class WindowReads(Protocol):
    async def service_windows(self, *, since: datetime) -> dict[str, ServiceWindow]: ...


class AlertUnit(Protocol):
    @property
    def alerts(self) -> AlertRepository: ...
    @property
    def alert_signals(self) -> SignalSources: ...
    @property
    def replicas(self) -> ReplicaReads: ...
    @property
    def signals(self) -> WindowReads: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def requests(self) -> RequestRepository: ...
    @property
    def gates(self) -> GateRepository: ...


Transactions = Callable[[], AbstractAsyncContextManager[AlertUnit]]


class AlertObserver(Protocol):
    """The metrics of an evaluation (``services/control/instruments.py``)."""

    def evaluated(
        self, values: Mapping[str, float | None], firing: Mapping[Severity, int]
    ) -> None: ...


@dataclass(frozen=True)
class AlertPolicy:
    live_seconds: float
    signal_window: timedelta
    job_window: timedelta
    info_window: timedelta
    integrity_jobs: tuple[str, ...]
    resolve_channels: frozenset[Channel]
    safeguard_action: str
    """"pause" or "kill_switch"."""


@dataclass(frozen=True)
class Evaluation:
    transitions: tuple[Transition, ...]
    values: Mapping[str, float | None]
    rules: Mapping[str, AlertRule]
    delivery: DeliveryReport


def _silence_json(silence: Silence) -> dict[str, Any]:
    return {
        "silence_id": silence.silence_id,
        "rule_names": list(silence.rule_names),
        "matchers": dict(silence.matchers),
        "starts_at": silence.starts_at.isoformat(),
        "ends_at": silence.ends_at.isoformat(),
        "created_by": silence.created_by,
        "comment": silence.comment,
        "expired_at": silence.expired_at.isoformat() if silence.expired_at else None,
    }


def _silence_from_json(data: Mapping[str, Any]) -> Silence:
    expired = data.get("expired_at")
    return Silence(
        silence_id=int(data["silence_id"]),
        rule_names=tuple(data["rule_names"]),
        matchers=dict(data["matchers"]),
        starts_at=datetime.fromisoformat(data["starts_at"]),
        ends_at=datetime.fromisoformat(data["ends_at"]),
        created_by=str(data["created_by"]),
        comment=str(data["comment"]),
        expired_at=datetime.fromisoformat(expired) if expired else None,
    )


class AlertService:
    def __init__(
        self,
        *,
        transactions: Transactions,
        dispatcher: NotificationDispatcher,
        policy: AlertPolicy,
        observer: AlertObserver,
        after_commit: AfterCommit,
    ) -> None:
        """``after_commit`` announces a gate version an evaluation's safeguard committed (the
        kill switch), as ``GateCommands`` does after its own changes."""
        self._transactions = transactions
        self._dispatcher = dispatcher
        self._policy = policy
        self._observer = observer
        self._after_commit = after_commit

    # ------------------------------------------------------------------ rules

    @property
    def signals(self) -> tuple[SignalSpec, ...]:
        return SIGNALS

    async def rules(self) -> list[AlertRule]:
        async with self._transactions() as unit:
            return await unit.alerts.rules()

    async def upsert_rule(
        self, rule: AlertRule, *, request_id: str | None, actor: str
    ) -> tuple[AlertRule, bool]:
        validate_rule(rule, known_signals=SIGNAL_NAMES)
        content = {"name": rule.name, **rule.as_json()}
        key = keyed(Action.UPSERT_ALERT_RULE, actor, request_id, content)
        async with self._transactions() as unit:
            before = await unit.alerts.rule_for_update(rule.name)
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return rule, bool(stored["created"])
            await unit.alerts.put_rule(rule)
            await remember(unit.requests, key, {"created": before is None})
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.UPSERT_ALERT_RULE,
                    target=f"alert_rule:{rule.name}",
                    before=_audited(before) if before is not None else None,
                    after=_audited(rule),
                    reason="",
                    request_id=request_id,
                )
            )
        return rule, before is None

    # ------------------------------------------------------------------ evaluation

    async def evaluate(self, *, wait: bool) -> Evaluation | None:
        """None when ``wait`` is false and another replica is evaluating."""
        async with self._transactions() as unit:
            if not await unit.alerts.lock_evaluation(wait=wait):
                return None
            now = await unit.alerts.now()
            values = await self._signal_values(unit, now)
            rules = await unit.alerts.rules()
            active = await unit.alerts.active_alerts()
            silences = await unit.alerts.silences(now=now, include_expired=False)
            stepped: list[Transition] = []
            for rule in rules:
                transition = step(
                    rule,
                    active.get(rule.name),
                    values.get(rule.signal),
                    now=now,
                    is_silenced=silenced(rule, silences, now),
                )
                if transition is None:
                    continue
                transition = replace(
                    transition, alert=await unit.alerts.save_alert(transition.alert)
                )
                stepped.append(transition)
                await self._queue(unit.alerts, rule, transition)
            by_name = {rule.name: rule for rule in rules}
            changed = tuple(t for t in stepped if t.changed)
            gate_version = await self._guard_rollout(unit, changed, by_name)
        if gate_version is not None:
            await self._after_commit(gate_version)
        firing = dict.fromkeys(Severity, 0)
        for transition in stepped:
            if transition.alert.state is AlertState.FIRING:
                firing[transition.alert.severity] += 1
        self._observer.evaluated(values, firing)
        delivery = await self._dispatcher.deliver()
        return Evaluation(changed, values, by_name, delivery)

    async def tick(self) -> None:
        """The periodic loop's round: skipped while another replica evaluates."""
        evaluation = await self.evaluate(wait=False)
        if evaluation is None:
            # Another replica evaluates; deliver anything a replica that died left queued.
            await self._dispatcher.deliver()

    async def _signal_values(self, unit: AlertUnit, now: datetime) -> dict[str, float | None]:
        policy = self._policy
        replicas = await unit.replicas.replicas(
            live_seconds=policy.live_seconds, include_gone=False
        )
        windows = await unit.signals.service_windows(since=now - policy.signal_window)
        jobs = await unit.alert_signals.job_facts(
            now=now,
            window=policy.job_window,
            recent=policy.info_window,
            integrity_jobs=policy.integrity_jobs,
        )
        thresholds = await unit.alert_signals.threshold_facts(now=now, recent=policy.info_window)
        return signal_values(replicas=replicas, windows=windows, jobs=jobs, thresholds=thresholds)

    async def _queue(
        self, alerts: AlertRepository, rule: AlertRule, transition: Transition
    ) -> None:
        """Writes the transition's notifications into the outbox (this transaction)."""
        kind = transition.notify
        if kind is None:
            return
        if kind is NotificationKind.RESOLVED and rule.severity is Severity.INFO:
            return  # an info alert reports that something happened: its end is no news
        channels = rule.channels
        if kind is NotificationKind.RESOLVED:
            channels = tuple(c for c in channels if c in self._policy.resolve_channels)
        payload = alert_payload(rule, transition.alert, kind)
        for channel in channels:
            await alerts.enqueue(
                alert_id=transition.alert.alert_id,
                rule_name=rule.name,
                channel=channel,
                kind=kind,
                payload=payload,
            )

    # ------------------------------------------------------------------ rollout safeguards

    async def _guard_rollout(
        self, unit: AlertUnit, changed: Sequence[Transition], rules: Mapping[str, AlertRule]
    ) -> int | None:
        """Pauses the rollout for a critical safeguard that starts firing and resumes it when
        the alert resolves, in the evaluation's transaction: the firing alert is what refuses
        AdvanceRollout, so it and its audit row commit together or not at all. The gate
        version to announce when a safeguard engaged the kill switch, else None."""
        gate_version = None
        for transition in changed:
            rule = rules[transition.alert.rule_name]
            if not rule.safeguard or rule.severity is not Severity.CRITICAL:
                continue
            alert = transition.alert
            if alert.state is AlertState.FIRING:
                engaged = await self._safeguard_fired(unit, rule, alert)
                gate_version = engaged if engaged is not None else gate_version
            elif alert.state is AlertState.RESOLVED and transition.previous is AlertState.FIRING:
                await self._audit(
                    unit.audit,
                    Action.RESUME_ROLLOUT,
                    reason=f"safeguard {rule.name} resolved",
                    after={"alert_id": alert.alert_id},
                )
        return gate_version

    async def _safeguard_fired(self, unit: AlertUnit, rule: AlertRule, alert: Alert) -> int | None:
        reason = f"safeguard {rule.name} firing: {rule.summary(alert.value)}"
        await self._audit(
            unit.audit,
            Action.PAUSE_ROLLOUT,
            reason=reason,
            after={"alert_id": alert.alert_id, "action": self._policy.safeguard_action},
        )
        if self._policy.safeguard_action != "kill_switch":
            return None
        # The request id makes a repeated evaluation of the same alert a replay.
        result = await switch_kill_switch(
            unit,
            KillSwitchChange(
                request_id=f"alert-{alert.alert_id}", reason=reason[:1000], engaged=True
            ),
            actor=ALERTING_ACTOR,
        )
        return None if result.replayed else result.version

    @staticmethod
    async def _audit(
        audit: AuditRepository, action: str, *, reason: str, after: Mapping[str, Any]
    ) -> None:
        await audit.record(
            AuditEntry(
                actor=ALERTING_ACTOR,
                action=action,
                target="rollout",
                before=None,
                after=after,
                reason=reason,
                request_id=None,
            )
        )

    # ------------------------------------------------------------------ reads

    async def alerts(
        self, *, rule_name: str = "", active_only: bool, before_id: int | None, limit: int | None
    ) -> tuple[list[Alert], dict[str, AlertRule]]:
        """The alerts newest first (``limit`` None: as many as there are rules, for the active
        ones), with the rules they belong to."""
        async with self._transactions() as unit:
            rules = {rule.name: rule for rule in await unit.alerts.rules()}
            found = await unit.alerts.alerts(
                rule_name=rule_name,
                active_only=active_only,
                before_id=before_id,
                limit=limit if limit is not None else len(rules) + 1,
            )
        return found, rules

    # ------------------------------------------------------------------ silences

    async def create_silence(
        self,
        *,
        rule_names: Sequence[str],
        matchers: Mapping[str, str],
        duration: timedelta,
        comment: str,
        request_id: str | None,
        actor: str,
    ) -> tuple[datetime, Silence]:
        """The silence (the first one, for a retried request id) and the database's now it is
        judged active at."""
        content = {
            "rule_names": sorted(rule_names),
            "matchers": dict(matchers),
            "seconds": duration.total_seconds(),
            "comment": comment,
        }
        key = keyed(Action.CREATE_SILENCE, actor, request_id, content)
        async with self._transactions() as unit:
            now = await unit.alerts.now()
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return now, _silence_from_json(stored)
            known = {rule.name for rule in await unit.alerts.rules()}
            violations = Violations()
            for index, name in enumerate(rule_names):
                if name not in known:
                    violations.add(f"rule_names[{index}]", f"no alert rule {name!r}")
            if not timedelta(0) < duration <= MAX_SILENCE:
                violations.add("duration", "must be more than 0 and at most 90 days")
            violations.raise_if_any()
            silence = await unit.alerts.add_silence(
                Silence(
                    silence_id=0,
                    rule_names=tuple(rule_names),
                    matchers=dict(matchers),
                    starts_at=now,
                    ends_at=now + duration,
                    created_by=actor,
                    comment=comment,
                )
            )
            await remember(unit.requests, key, _silence_json(silence))
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.CREATE_SILENCE,
                    target=f"silence:{silence.silence_id}",
                    before=None,
                    after=_silence_json(silence),
                    reason=comment,
                    request_id=request_id,
                )
            )
        return now, silence

    async def expire_silence(self, silence_id: int, *, actor: str) -> tuple[datetime, Silence]:
        """The silence as it stands after the call, and the database's now it is judged at."""
        async with self._transactions() as unit:
            silence = await unit.alerts.silence_for_update(silence_id)
            if silence is None:
                raise NotFound(f"no silence {silence_id}", reason="SILENCE_NOT_FOUND")
            now = await unit.alerts.now()
            if not silence.active(now):
                return now, silence  # already over: expiring again changes nothing
            await unit.alerts.expire_silence(silence_id, at=now)
            expired = replace(silence, expired_at=now)
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.EXPIRE_SILENCE,
                    target=f"silence:{silence_id}",
                    before=_silence_json(silence),
                    after=_silence_json(expired),
                    reason="",
                    request_id=None,
                )
            )
        return now, expired

    async def silences(self, *, include_expired: bool) -> tuple[datetime, list[Silence]]:
        async with self._transactions() as unit:
            now = await unit.alerts.now()
            return now, await unit.alerts.silences(now=now, include_expired=include_expired)

    # ------------------------------------------------------------------ test notifications

    async def send_test(self, channel: Channel, message: str) -> tuple[bool, int, str]:
        """Queues one test notification and delivers it now: (delivered, attempts, detail)."""
        async with self._transactions() as unit:
            now = await unit.alerts.now()
            notification_id = await unit.alerts.enqueue(
                alert_id=None,
                rule_name="test",
                channel=channel,
                kind=NotificationKind.TEST,
                payload=sample_payload(message, now=now),
            )
        report = await self._dispatcher.deliver(only=[notification_id])
        if not report.results or report.results[0].lease_lost:
            raise FailedPrecondition("the test notification was claimed by another replica")
        result = report.results[0]
        return result.delivered, result.attempts, result.detail


def refuse_while_safeguards_fire(firing: Sequence[str]) -> None:
    """AdvanceRollout's check: a firing critical safeguard refuses it, ``force`` or not."""
    if firing:
        raise FailedPrecondition(
            f"rollout safeguard(s) firing: {', '.join(firing)}; resolve them (or disable the "
            "rule with UpsertAlertRule, audited) before advancing",
            reason="SAFEGUARD_FIRING",
            metadata={"alerts": ",".join(firing)},
        )


def _audited(rule: AlertRule) -> dict[str, Any]:
    """A rule as the audit log records it: its JSON, with the severity's name for the reader."""
    return {**rule.as_json(), "severity": rule.severity.label}
