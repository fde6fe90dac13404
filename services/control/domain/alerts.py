"""Alert rules, their validation, silences, and the state machine of an alert.

An alert is one episode of a rule's condition: it starts PENDING when the condition first holds,
becomes FIRING once it held for the rule's ``for`` duration (at once when that is zero), and
RESOLVED when the condition stopped holding for ``keep_firing_for`` (a pending alert whose
condition stops holding resolves at once without ever firing). A signal with no data never
holds: an alert rule says something is wrong, and nothing recorded is not evidence of that.

Silences change only who is told: a silenced alert moves through its states like any other and
is kept in the history with ``silenced`` set; no firing or repeat notification goes out while it
is silenced. Its resolve does, when it had been notified before the silence began: it closes the
incident that notification opened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any

from shared.errors import Violations
from shared.finding_input import check_text

MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_LABELS = 20
MAX_DURATION = timedelta(days=30)
MIN_REPEAT = timedelta(minutes=1)
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
LABEL_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"alertname", "severity"})
COMPARISONS = (">", ">=", "<", "<=")


class Severity(IntEnum):
    """Values of reviewlearn.control.v1.AlertSeverity."""

    CRITICAL = 1
    WARNING = 2
    INFO = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class AlertState(IntEnum):
    """Values of reviewlearn.control.v1.AlertState."""

    PENDING = 1
    FIRING = 2
    RESOLVED = 3


class Channel(StrEnum):
    """Notification channels; the value is what ``alert_rules.channels`` stores."""

    PAGERDUTY = "pagerduty"
    SLACK = "slack"
    EMAIL = "email"
    LOG = "log"


class NotificationKind(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"
    TEST = "test"


@dataclass(frozen=True)
class AlertRule:
    name: str
    signal: str
    comparison: str
    threshold: float
    for_duration: timedelta
    severity: Severity
    channels: tuple[Channel, ...]
    repeat_interval: timedelta = timedelta(hours=4)
    keep_firing_for: timedelta = timedelta(0)
    enabled: bool = True
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    safeguard: bool = False

    def holds(self, value: float | None) -> bool:
        """Whether the condition holds for this observed value (no data never holds)."""
        if value is None or not math.isfinite(value):
            return False
        return {
            ">": value > self.threshold,
            ">=": value >= self.threshold,
            "<": value < self.threshold,
            "<=": value <= self.threshold,
        }[self.comparison]

    def all_labels(self) -> dict[str, str]:
        return {**self.labels, "alertname": self.name, "severity": self.severity.label}

    def as_json(self) -> dict[str, Any]:
        """The rule's settings (all but its name) as JSON values: the columns ``alert_rules``
        stores them in, and what the audit log and the request ledger record of the rule."""
        return {
            "signal": self.signal,
            "comparison": self.comparison,
            "threshold": self.threshold,
            "for_seconds": int(self.for_duration.total_seconds()),
            "keep_firing_seconds": int(self.keep_firing_for.total_seconds()),
            "severity": int(self.severity),
            "channels": [str(c) for c in self.channels],
            "repeat_seconds": int(self.repeat_interval.total_seconds()),
            "enabled": self.enabled,
            "description": self.description,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "safeguard": self.safeguard,
        }

    def summary(self, value: float | None) -> str:
        template = self.annotations.get("summary") or f"{self.name}: {self.signal}"
        shown = "no data" if value is None else f"{value:.4g}"
        return template.replace("{{ value }}", shown)


def validate_rule(rule: AlertRule, *, known_signals: Sequence[str], prefix: str = "rule") -> None:
    """Raises InvalidArgument naming every field that is wrong."""
    violations = Violations()
    if not NAME_PATTERN.match(rule.name) or len(rule.name) > MAX_NAME_CHARS:
        violations.add(
            f"{prefix}.name",
            f"1-{MAX_NAME_CHARS} letters, digits or underscores, starting with a letter",
        )
    if rule.signal not in known_signals:
        violations.add(
            f"{prefix}.signal", f"unknown signal {rule.signal!r}; one of {', '.join(known_signals)}"
        )
    if rule.comparison not in COMPARISONS:
        violations.add(f"{prefix}.comparison", f"one of {' '.join(COMPARISONS)}")
    if not math.isfinite(rule.threshold):
        violations.add(f"{prefix}.threshold", "must be a finite number")
    for name, duration in (
        ("for_duration", rule.for_duration),
        ("keep_firing_for", rule.keep_firing_for),
    ):
        if duration < timedelta(0) or duration > MAX_DURATION:
            violations.add(f"{prefix}.{name}", "must be between 0 and 30 days")
    if not MIN_REPEAT <= rule.repeat_interval <= MAX_DURATION:
        violations.add(f"{prefix}.repeat_interval", "must be between 1 minute and 30 days")
    for name, duration in (
        ("for_duration", rule.for_duration),
        ("keep_firing_for", rule.keep_firing_for),
        ("repeat_interval", rule.repeat_interval),
    ):
        if duration % timedelta(seconds=1):
            violations.add(f"{prefix}.{name}", "must be whole seconds")
    if not rule.channels:
        violations.add(f"{prefix}.channels", "at least one channel")
    if len(set(rule.channels)) != len(rule.channels):
        violations.add(f"{prefix}.channels", "a channel appears twice")
    check_text(violations, f"{prefix}.description", rule.description, max_chars=MAX_TEXT_CHARS)
    for kind, mapping in (("labels", rule.labels), ("annotations", rule.annotations)):
        if len(mapping) > MAX_LABELS:
            violations.add(f"{prefix}.{kind}", f"at most {MAX_LABELS}")
        for key, value in mapping.items():
            if not LABEL_PATTERN.match(key) or len(key) > MAX_NAME_CHARS:
                violations.add(f"{prefix}.{kind}[{key}]", "not a valid label name")
            elif kind == "labels" and key in RESERVED_LABELS:
                violations.add(f"{prefix}.{kind}[{key}]", "set by the rule itself")
            check_text(violations, f"{prefix}.{kind}[{key}]", value, max_chars=MAX_TEXT_CHARS)
    if rule.safeguard and rule.severity is not Severity.CRITICAL:
        violations.add(f"{prefix}.safeguard", "only critical rules guard the rollout")
    violations.raise_if_any()


@dataclass(frozen=True)
class Silence:
    silence_id: int
    rule_names: tuple[str, ...]
    matchers: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        end = min(self.ends_at, self.expired_at) if self.expired_at else self.ends_at
        return self.starts_at <= now < end

    def matches(self, rule: AlertRule) -> bool:
        if self.rule_names and rule.name not in self.rule_names:
            return False
        labels = rule.all_labels()
        return all(labels.get(key) == value for key, value in self.matchers.items())


def silenced(rule: AlertRule, silences: Sequence[Silence], now: datetime) -> bool:
    return any(s.active(now) and s.matches(rule) for s in silences)


@dataclass(frozen=True)
class Alert:
    """One episode of a rule (a row of ``alert_events``); ``alert_id`` 0 until stored."""

    rule_name: str
    state: AlertState
    severity: Severity
    value: float | None
    active_since: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    cleared_since: datetime | None = None
    """When a firing alert's condition last stopped holding (keep_firing_for counts from it)."""
    last_notified_at: datetime | None = None
    notifications: int = 0
    silenced: bool = False
    alert_id: int = 0

    @property
    def active(self) -> bool:
        return self.state is not AlertState.RESOLVED


@dataclass(frozen=True)
class Transition:
    """What one evaluation did to one rule's alert, and who must be told."""

    alert: Alert
    previous: AlertState | None
    """None for an alert this evaluation started."""
    notify: NotificationKind | None

    @property
    def changed(self) -> bool:
        return self.previous is not self.alert.state


def step(
    rule: AlertRule,
    current: Alert | None,
    value: float | None,
    *,
    now: datetime,
    is_silenced: bool,
) -> Transition | None:
    """The next state of ``rule``'s alert; None when there is no alert and none starts."""
    holds = rule.enabled and rule.holds(value)
    if current is None or not current.active:
        if not holds:
            return None
        fires = rule.for_duration <= timedelta(0)
        started = Alert(
            rule_name=rule.name,
            state=AlertState.FIRING if fires else AlertState.PENDING,
            severity=rule.severity,
            value=value,
            active_since=now,
            fired_at=now if fires else None,
            silenced=is_silenced,
        )
        return _notified(rule, Transition(started, None, None), now=now)
    observed = value if value is not None else current.value
    alert = replace(current, value=observed, silenced=is_silenced, severity=rule.severity)
    if current.state is AlertState.PENDING:
        if not holds:
            resolved = replace(alert, state=AlertState.RESOLVED, resolved_at=now)
            return Transition(resolved, AlertState.PENDING, None)
        if now - current.active_since >= rule.for_duration:
            alert = replace(alert, state=AlertState.FIRING, fired_at=now)
        return _notified(rule, Transition(alert, AlertState.PENDING, None), now=now)
    # FIRING
    if holds:
        alert = replace(alert, cleared_since=None)
        return _notified(rule, Transition(alert, AlertState.FIRING, None), now=now)
    cleared = current.cleared_since or now
    if not rule.enabled or now - cleared >= rule.keep_firing_for:
        resolved = replace(alert, state=AlertState.RESOLVED, resolved_at=now, cleared_since=cleared)
        # A resolve closes what a notification opened (a PagerDuty incident), so it goes out
        # even under a silence that began after the alert was notified.
        told = current.notifications > 0
        return Transition(resolved, AlertState.FIRING, NotificationKind.RESOLVED if told else None)
    return Transition(replace(alert, cleared_since=cleared), AlertState.FIRING, None)


def _notified(rule: AlertRule, transition: Transition, *, now: datetime) -> Transition:
    """Adds the notification a firing alert is due: the first one (also after a silence ends),
    or a repeat once ``repeat_interval`` passed since the last one."""
    alert = transition.alert
    if alert.state is not AlertState.FIRING or alert.silenced:
        return transition
    if alert.last_notified_at is None:
        kind = NotificationKind.FIRING
    elif now - alert.last_notified_at >= rule.repeat_interval:
        kind = NotificationKind.REPEAT
    else:
        return transition
    told = replace(alert, last_notified_at=now, notifications=alert.notifications + 1)
    return replace(transition, alert=told, notify=kind)


def dedup_key(rule_name: str, alert_id: int) -> str:
    """PagerDuty's dedup_key: one incident per alert episode, shared by trigger, repeats and
    resolve, and the same whichever control replica sends it."""
    return f"reviewlearn/{rule_name}/{alert_id}"
