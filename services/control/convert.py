"""Protobuf ↔ domain for the control service."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2

from services.control.domain.alert_catalogue import SignalSpec
from services.control.domain.alerts import (
    LABEL_PATTERN,
    Alert,
    AlertRule,
    AlertState,
    Channel,
    Severity,
    Silence,
)
from services.control.domain.changes import (
    MAX_REASON_CHARS,
    Action,
    GateChange,
    GateClear,
    KillSwitchChange,
    RolloutAdvance,
    RolloutRollback,
    check_feature,
    check_issues,
    check_mutation,
    check_repository_url,
    check_wait,
)
from services.control.domain.health import Status, SystemHealth
from services.control.domain.replicas import Propagation, ReplicaView
from services.control.domain.rollout import (
    Criterion,
    PhaseRecord,
    check_percentage,
    check_phase,
)
from services.control.usecases.audit import AuditQuery, AuditRecord
from shared.convert import timestamp_from_pb, timestamp_to_pb
from shared.errors import Violations
from shared.finding_input import check_text
from shared.gates.model import Feature, GateDecision, GateSnapshot, Switch
from shared.gates.store import FEATURE_CODES, FEATURE_OF_CODE

MAX_DURATION_SECONDS = 10 * 365 * 86400


def feature_from_pb(value: int) -> Feature | None:
    """None for FEATURE_UNSPECIFIED and numbers this build does not know."""
    return FEATURE_OF_CODE.get(int(value))


def feature_to_pb(feature: Feature) -> common_pb2.Feature.ValueType:
    return common_pb2.Feature.ValueType(FEATURE_CODES[feature])


def duration_from_pb(
    value: Duration, field: str, violations: Violations, *, present: bool
) -> timedelta | None:
    """None when the field is unset; a violation when it is not a valid duration."""
    if not present:
        return None
    if abs(value.seconds) > MAX_DURATION_SECONDS or not -999_999_999 <= value.nanos <= 999_999_999:
        violations.add(field, "is not a valid duration")
        return None
    if (value.seconds > 0 and value.nanos < 0) or (value.seconds < 0 and value.nanos > 0):
        violations.add(field, "has seconds and nanos of different signs")
        return None
    return timedelta(seconds=value.seconds, microseconds=value.nanos / 1000)


# ------------------------------------------------------------------ requests


def _wait_from_pb(
    request: control_pb2.SetFeatureGateRequest | control_pb2.SetKillSwitchRequest,
    violations: Violations,
) -> timedelta | None:
    wait = duration_from_pb(
        request.wait_for_replicas,
        "wait_for_replicas",
        violations,
        present=request.HasField("wait_for_replicas"),
    )
    check_wait(violations, wait, "wait_for_replicas")
    return wait


def _gate_target_from_pb(
    request: control_pb2.SetFeatureGateRequest | control_pb2.ClearFeatureGateRequest,
    violations: Violations,
) -> Feature | None:
    """The feature of a gate write, with its repository, id and reason checked."""
    feature = feature_from_pb(request.feature)
    check_feature(violations, feature)
    check_repository_url(violations, request.repository_url)
    check_mutation(violations, request_id=request.request_id, reason=request.reason)
    return feature


def gate_change_from_pb(
    request: control_pb2.SetFeatureGateRequest,
) -> tuple[GateChange, timedelta | None]:
    violations = Violations()
    feature = _gate_target_from_pb(request, violations)
    wait = _wait_from_pb(request, violations)
    violations.raise_if_any()
    assert feature is not None
    change = GateChange(
        request_id=request.request_id or None,
        reason=request.reason.strip(),
        feature=feature,
        repository_url=request.repository_url,
        enabled=request.enabled,
    )
    return change, wait


def gate_clear_from_pb(request: control_pb2.ClearFeatureGateRequest) -> GateClear:
    violations = Violations()
    feature = _gate_target_from_pb(request, violations)
    violations.raise_if_any()
    assert feature is not None
    return GateClear(
        request_id=request.request_id or None,
        reason=request.reason.strip(),
        feature=feature,
        repository_url=request.repository_url,
    )


def kill_switch_from_pb(
    request: control_pb2.SetKillSwitchRequest,
) -> tuple[KillSwitchChange, timedelta | None]:
    violations = Violations()
    check_mutation(violations, request_id=request.request_id, reason=request.reason)
    wait = _wait_from_pb(request, violations)
    violations.raise_if_any()
    change = KillSwitchChange(
        request_id=request.request_id or None,
        reason=request.reason.strip(),
        engaged=request.engaged,
    )
    return change, wait


def evaluation_from_pb(request: control_pb2.EvaluateFeatureRequest) -> tuple[Feature, str]:
    violations = Violations()
    feature = feature_from_pb(request.feature)
    check_feature(violations, feature)
    check_repository_url(violations, request.repository_url)
    violations.raise_if_any()
    assert feature is not None
    return feature, request.repository_url


# ------------------------------------------------------------------ responses


def switch_to_pb(feature: Feature, repository_url: str, switch: Switch) -> control_pb2.FeatureGate:
    gate = control_pb2.FeatureGate(
        feature=feature_to_pb(feature),
        repository_url=repository_url,
        enabled=switch.enabled,
        reason=switch.reason,
        updated_by=switch.updated_by,
    )
    if switch.updated_at is not None:
        gate.update_time.CopyFrom(timestamp_to_pb(switch.updated_at))
    return gate


def snapshot_to_pb(snapshot: GateSnapshot) -> control_pb2.GateSnapshot:
    kill = snapshot.kill_switch
    rollout = snapshot.rollout
    message = control_pb2.GateSnapshot(
        version=snapshot.version,
        kill_switch_engaged=kill.engaged,
        kill_switch_reason=kill.reason,
        kill_switch_updated_by=kill.updated_by,
        gates=[
            switch_to_pb(feature, "", switch)
            for feature, switch in sorted(snapshot.global_gates.items())
        ]
        + [
            switch_to_pb(feature, url, switch)
            for (feature, url), switch in sorted(snapshot.overrides.items())
        ],
        rollout=control_pb2.RolloutMembership(
            in_force=rollout.in_force,
            phase=rollout.phase,
            percentage=rollout.percentage,
            salt=rollout.salt,
            sticky_exposure=rollout.sticky_exposure,
            sticky_repositories=len(rollout.sticky_repositories),
        ),
    )
    if kill.updated_at is not None:
        message.kill_switch_update_time.CopyFrom(timestamp_to_pb(kill.updated_at))
    return message


def decision_to_pb(decision: GateDecision) -> control_pb2.EvaluateFeatureResponse:
    return control_pb2.EvaluateFeatureResponse(
        enabled=decision.enabled,
        decided_by=str(decision.decided_by),
        reason=decision.reason,
        version=decision.version,
        decided_by_feature=feature_to_pb(decision.feature),
    )


def replica_to_pb(replica: ReplicaView) -> control_pb2.ReplicaState:
    return control_pb2.ReplicaState(
        replica_id=replica.replica_id,
        service=replica.service,
        applied_version=replica.applied_version,
        heartbeat_time=timestamp_to_pb(replica.heartbeat_at),
        start_time=timestamp_to_pb(replica.started_at),
        gates_stale=replica.gates_stale,
        live=replica.live,
        hard_kill=replica.hard_kill,
    )


def propagation_to_pb(propagation: Propagation) -> control_pb2.Propagation:
    waited = Duration()
    waited.FromTimedelta(propagation.waited)
    return control_pb2.Propagation(
        version=propagation.version,
        applied=[replica_to_pb(r) for r in propagation.applied],
        pending=[replica_to_pb(r) for r in propagation.pending],
        converged=propagation.converged,
        waited=waited,
    )


# ------------------------------------------------------------------ rollout


def advance_from_pb(request: control_pb2.AdvanceRolloutRequest) -> RolloutAdvance:
    violations = Violations()
    check_mutation(violations, request_id=request.request_id, reason=request.reason)
    check_issues(violations, list(request.issues_found), "issues_found")
    violations.raise_if_any()
    return RolloutAdvance(
        request_id=request.request_id or None,
        reason=request.reason.strip(),
        force=request.force,
        issues_found=tuple(i.strip() for i in request.issues_found),
    )


def rollback_from_pb(request: control_pb2.RollbackRolloutRequest) -> RolloutRollback:
    violations = Violations()
    check_mutation(violations, request_id=request.request_id, reason=request.reason)
    check_phase(violations, request.to_phase, "to_phase")
    check_issues(violations, list(request.issues_found), "issues_found")
    violations.raise_if_any()
    return RolloutRollback(
        request_id=request.request_id or None,
        reason=request.reason.strip(),
        to_phase=request.to_phase,
        sticky_exposure=request.sticky_exposure,
        issues_found=tuple(i.strip() for i in request.issues_found),
    )


def what_if_from_pb(
    request: control_pb2.IsRepoInRolloutRequest | control_pb2.ListRolloutReposRequest,
    violations: Violations,
) -> tuple[int | None, int | None]:
    phase = request.phase if request.HasField("phase") else None
    percentage = request.percentage if request.HasField("percentage") else None
    if phase is not None and percentage is not None:
        violations.add("percentage", "give a phase or a percentage, not both")
    if phase is not None:
        check_phase(violations, phase, "phase")
    if percentage is not None:
        check_percentage(violations, percentage, "percentage")
    return phase, percentage


def membership_from_pb(
    request: control_pb2.IsRepoInRolloutRequest,
) -> tuple[str, int | None, int | None]:
    violations = Violations()
    check_repository_url(violations, request.repository_url)
    if not request.repository_url:
        violations.add("repository_url", "is required")
    phase, percentage = what_if_from_pb(request, violations)
    violations.raise_if_any()
    return request.repository_url, phase, percentage


def criteria_phase_from_pb(request: control_pb2.EvaluateRolloutCriteriaRequest) -> int | None:
    violations = Violations()
    check_phase(violations, request.phase, "phase")
    violations.raise_if_any()
    return request.phase or None


def criterion_to_pb(criterion: Criterion) -> control_pb2.SuccessCriterion:
    return control_pb2.SuccessCriterion(
        name=criterion.name,
        comparison=criterion.comparison,
        threshold=criterion.threshold,
        observed=criterion.observed,
        met=criterion.met,
        detail=criterion.detail,
        blocking=criterion.blocking,
        measured=criterion.measured,
    )


def phase_to_pb(record: PhaseRecord | None) -> control_pb2.RolloutPhase:
    if record is None:
        return control_pb2.RolloutPhase(phase=0, percentage=0)
    metrics = record.success_metrics.get("exit") or record.success_metrics.get("entry") or []
    message = control_pb2.RolloutPhase(
        phase=record.phase,
        percentage=record.percentage,
        start_time=timestamp_to_pb(record.started_at),
        issues_found=list(record.issues_found),
        started_by=record.started_by,
        reason=record.reason,
        forced=record.forced,
        sticky_exposure=record.sticky_exposure,
        success_metrics=[criterion_to_pb(Criterion.from_json(c)) for c in metrics],
    )
    if record.ended_at is not None:
        message.end_time.CopyFrom(timestamp_to_pb(record.ended_at))
    return message


# ------------------------------------------------------------------ audit and health


def audit_query_from_pb(request: control_pb2.ListAuditEventsRequest) -> AuditQuery:
    violations = Violations()
    if request.action and request.action not in Action.ALL:
        violations.add("action", f"must be one of {', '.join(Action.ALL)}")
    feature = None
    if request.feature:
        feature = feature_from_pb(request.feature)
        check_feature(violations, feature)
    check_repository_url(violations, request.repository_url)
    start = timestamp_from_pb(request.start_time, "start_time", violations, required=False)
    end = timestamp_from_pb(request.end_time, "end_time", violations, required=False)
    has_start = request.HasField("start_time")
    has_end = request.HasField("end_time")
    if has_start and has_end and end <= start:
        violations.add("end_time", "must be after start_time")
    violations.raise_if_any()
    return AuditQuery(
        action=request.action or None,
        feature=feature,
        repository_url=request.repository_url or None,
        start=start if has_start else None,
        end=end if has_end else None,
    )


def audit_to_pb(record: AuditRecord) -> control_pb2.AuditEvent:
    return control_pb2.AuditEvent(
        audit_id=record.audit_id,
        actor=record.actor,
        action=record.action,
        target=record.target,
        before_json=json.dumps(record.before, sort_keys=True) if record.before is not None else "",
        after_json=json.dumps(record.after, sort_keys=True) if record.after is not None else "",
        reason=record.reason,
        create_time=timestamp_to_pb(record.created_at),
        request_id=record.request_id or "",
        feature=feature_to_pb(record.feature)
        if record.feature is not None
        else common_pb2.FEATURE_UNSPECIFIED,
        repository_url=record.repository_url,
    )


_STATUS = {
    Status.HEALTHY: control_pb2.HEALTH_STATUS_HEALTHY,
    Status.DEGRADED: control_pb2.HEALTH_STATUS_DEGRADED,
    Status.UNHEALTHY: control_pb2.HEALTH_STATUS_UNHEALTHY,
}


def health_to_pb(
    health: SystemHealth, replicas: list[ReplicaView]
) -> control_pb2.GetSystemHealthResponse:
    message = control_pb2.GetSystemHealthResponse(
        status=_STATUS[health.status],
        components=[
            control_pb2.ComponentHealth(
                name=c.name,
                status=_STATUS[c.status],
                detail=c.detail,
                live_replicas=c.live_replicas,
            )
            for c in health.components
        ],
        feedback_backlog=health.feedback_backlog or 0,
        confidence_threshold_stale=bool(health.thresholds_stale),
        cache_hit_rate=health.cache_hit_rate or 0.0,
        cache_hit_rate_known=health.cache_hit_rate is not None,
        gate_version=health.gate_version,
        gates_converged=health.gates_converged,
        replicas_seen=health.replicas_seen,
        replicas=[replica_to_pb(r) for r in replicas],
        kill_switch_engaged=health.kill_switch_engaged,
        generate_time=timestamp_to_pb(health.generated_at),
    )
    if health.last_learning_update is not None:
        message.last_learning_update.CopyFrom(timestamp_to_pb(health.last_learning_update))
    return message


# ------------------------------------------------------------------ alerts

_CHANNEL_OF_PB = {
    control_pb2.CHANNEL_PAGERDUTY: Channel.PAGERDUTY,
    control_pb2.CHANNEL_SLACK: Channel.SLACK,
    control_pb2.CHANNEL_EMAIL: Channel.EMAIL,
    control_pb2.CHANNEL_LOG: Channel.LOG,
}
_PB_OF_CHANNEL = {channel: value for value, channel in _CHANNEL_OF_PB.items()}


def channel_from_pb(value: int, field: str, violations: Violations) -> Channel | None:
    channel: Channel | None = _CHANNEL_OF_PB.get(value)  # type: ignore[call-overload]
    if channel is None:
        violations.add(field, "must be one of CHANNEL_PAGERDUTY, _SLACK, _EMAIL, _LOG")
    return channel


def _duration_to_pb(value: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration


def alert_rule_from_pb(rule: control_pb2.AlertRule, violations: Violations) -> AlertRule | None:
    """The rule as sent; the domain (validate_rule) judges its values."""
    durations = {}
    for name in ("for_duration", "repeat_interval", "keep_firing_for"):
        durations[name] = duration_from_pb(
            getattr(rule, name), f"rule.{name}", violations, present=rule.HasField(name)
        )
    channels = [
        channel_from_pb(c, f"rule.channels[{i}]", violations) for i, c in enumerate(rule.channels)
    ]
    if rule.severity not in (1, 2, 3):
        violations.add("rule.severity", "must be CRITICAL, WARNING or INFO")
    if violations:
        return None
    repeat = durations["repeat_interval"]
    return AlertRule(
        name=rule.name,
        signal=rule.signal,
        comparison=rule.comparison,
        threshold=rule.threshold,
        for_duration=durations["for_duration"] or timedelta(0),
        keep_firing_for=durations["keep_firing_for"] or timedelta(0),
        repeat_interval=repeat if repeat is not None else timedelta(hours=4),
        severity=Severity(rule.severity),
        channels=tuple(c for c in channels if c is not None),
        enabled=rule.enabled,
        description=rule.description,
        labels=dict(rule.labels),
        annotations=dict(rule.annotations),
        safeguard=rule.safeguard,
    )


def alert_rule_to_pb(rule: AlertRule) -> control_pb2.AlertRule:
    return control_pb2.AlertRule(
        name=rule.name,
        signal=rule.signal,
        comparison=rule.comparison,
        threshold=rule.threshold,
        for_duration=_duration_to_pb(rule.for_duration),
        severity=control_pb2.AlertSeverity.ValueType(int(rule.severity)),
        channels=[_PB_OF_CHANNEL[c] for c in rule.channels],
        repeat_interval=_duration_to_pb(rule.repeat_interval),
        enabled=rule.enabled,
        description=rule.description,
        keep_firing_for=_duration_to_pb(rule.keep_firing_for),
        labels=dict(rule.labels),
        annotations=dict(rule.annotations),
        safeguard=rule.safeguard,
    )


def signal_to_pb(spec: SignalSpec) -> control_pb2.AlertSignal:
    return control_pb2.AlertSignal(name=spec.name, description=spec.description, unit=spec.unit)


def alert_to_pb(
    alert: Alert, rule: AlertRule | None, previous: AlertState | None = None
) -> control_pb2.Alert:
    message = control_pb2.Alert(
        alert_id=alert.alert_id,
        rule_name=alert.rule_name,
        state=control_pb2.AlertState.ValueType(int(alert.state)),
        severity=control_pb2.AlertSeverity.ValueType(int(alert.severity)),
        value=alert.value if alert.value is not None else 0.0,
        active_since=timestamp_to_pb(alert.active_since),
        silenced=alert.silenced,
        notifications=alert.notifications,
    )
    if alert.fired_at is not None:
        message.fired_time.CopyFrom(timestamp_to_pb(alert.fired_at))
    if alert.resolved_at is not None:
        message.resolved_time.CopyFrom(timestamp_to_pb(alert.resolved_at))
    if alert.last_notified_at is not None:
        message.last_notify_time.CopyFrom(timestamp_to_pb(alert.last_notified_at))
    if previous is not None:
        message.previous_state = control_pb2.AlertState.ValueType(int(previous))
    if rule is not None:
        message.labels.update(rule.all_labels())
        message.summary = rule.summary(alert.value)
    return message


def signal_value_to_pb(name: str, value: float | None) -> control_pb2.SignalValue:
    return control_pb2.SignalValue(
        name=name, value=value if value is not None else 0.0, known=value is not None
    )


def silence_request_from_pb(
    request: control_pb2.CreateSilenceRequest,
) -> tuple[list[str], dict[str, str], timedelta, str]:
    violations = Violations()
    check_mutation(
        violations, request_id=request.request_id, reason=request.comment, reason_required=False
    )
    duration = duration_from_pb(
        request.duration, "duration", violations, present=request.HasField("duration")
    )
    if duration is None and not violations:
        violations.add("duration", "is required")
    for key, value in request.matchers.items():
        if not LABEL_PATTERN.match(key):
            violations.add(f"matchers[{key}]", "not a valid label name")
        check_text(violations, f"matchers[{key}]", value, max_chars=MAX_REASON_CHARS)
    for index, name in enumerate(request.rule_names):
        check_text(violations, f"rule_names[{index}]", name, max_chars=200)
    violations.raise_if_any()
    assert duration is not None
    return list(request.rule_names), dict(request.matchers), duration, request.comment.strip()


def silence_to_pb(silence: Silence, *, now: datetime) -> control_pb2.Silence:
    message = control_pb2.Silence(
        silence_id=silence.silence_id,
        rule_names=list(silence.rule_names),
        start_time=timestamp_to_pb(silence.starts_at),
        end_time=timestamp_to_pb(silence.ends_at),
        created_by=silence.created_by,
        comment=silence.comment,
        matchers=dict(silence.matchers),
        active=silence.active(now),
    )
    if silence.expired_at is not None:
        message.expire_time.CopyFrom(timestamp_to_pb(silence.expired_at))
    return message
