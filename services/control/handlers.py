"""gRPC transport of the control plane: convert the request, call the use case, convert back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from reviewlearn.control.v1 import control_pb2, control_pb2_grpc

from services.control import convert
from services.control.domain.changes import check_mutation
from services.control.domain.replicas import propagation_of
from services.control.usecases.alerts import AlertService
from services.control.usecases.audit import AuditLog
from services.control.usecases.gates import GateCommands
from services.control.usecases.health import SystemHealthCheck
from services.control.usecases.propagation import PropagationTracker
from services.control.usecases.rollout import RolloutService
from shared.errors import Violations
from shared.finding_input import check_text
from shared.gates.client import GateClient
from shared.gates.model import GateSnapshot
from shared.pagination import PageTokens, page_size
from shared.rpc.interceptors import current_principal

log = logging.getLogger("reviewlearn.control")

SERVICE = control_pb2.DESCRIPTOR.services_by_name["ControlService"]


def _actor() -> str:
    principal = current_principal.get()
    return principal.token_id if principal is not None else "unknown"


class ControlHandlers(control_pb2_grpc.ControlServiceServicer):
    def __init__(
        self,
        *,
        gates: GateCommands,
        gate_client: GateClient,
        snapshots: Callable[[], Awaitable[GateSnapshot]],
        propagation: PropagationTracker,
        rollout: RolloutService,
        audit: AuditLog,
        health: SystemHealthCheck,
        pages: PageTokens,
        alerts: AlertService,
    ) -> None:
        self._pages = pages
        self._alerts = alerts
        self._rollout = rollout
        self._audit = audit
        self._health = health
        self._gates = gates
        self._client = gate_client
        self._snapshots = snapshots
        self._propagation = propagation

    async def _waited(self, version: int, wait: timedelta | None) -> control_pb2.Propagation | None:
        """Who applied ``version`` by the end of the wait; None when the caller did not wait."""
        if wait is None:
            return None
        return convert.propagation_to_pb(await self._propagation.wait(version, wait))

    # ------------------------------------------------------------------ gates

    async def GetFeatureGates(
        self, request: control_pb2.GetFeatureGatesRequest, context: Any
    ) -> control_pb2.GetFeatureGatesResponse:
        snapshot = await self._snapshots()
        return control_pb2.GetFeatureGatesResponse(snapshot=convert.snapshot_to_pb(snapshot))

    async def SetFeatureGate(
        self, request: control_pb2.SetFeatureGateRequest, context: Any
    ) -> control_pb2.SetFeatureGateResponse:
        change, wait = convert.gate_change_from_pb(request)
        result = await self._gates.set_gate(change, actor=_actor())
        return control_pb2.SetFeatureGateResponse(
            gate=convert.switch_to_pb(result.feature, result.repository_url, result.switch),
            version=result.version,
            propagation=await self._waited(result.version, wait),
        )

    async def ClearFeatureGate(
        self, request: control_pb2.ClearFeatureGateRequest, context: Any
    ) -> control_pb2.ClearFeatureGateResponse:
        result = await self._gates.clear_gate(convert.gate_clear_from_pb(request), actor=_actor())
        return control_pb2.ClearFeatureGateResponse(cleared=result.cleared, version=result.version)

    async def SetKillSwitch(
        self, request: control_pb2.SetKillSwitchRequest, context: Any
    ) -> control_pb2.SetKillSwitchResponse:
        change, wait = convert.kill_switch_from_pb(request)
        result = await self._gates.set_kill_switch(change, actor=_actor())
        return control_pb2.SetKillSwitchResponse(
            engaged=result.engaged,
            version=result.version,
            propagation=await self._waited(result.version, wait),
        )

    async def EvaluateFeature(
        self, request: control_pb2.EvaluateFeatureRequest, context: Any
    ) -> control_pb2.EvaluateFeatureResponse:
        feature, repository_url = convert.evaluation_from_pb(request)
        return convert.decision_to_pb(self._client.explain(feature, repository_url))

    async def WatchFeatureGates(
        self, request: control_pb2.WatchFeatureGatesRequest, context: Any
    ) -> AsyncIterator[control_pb2.WatchFeatureGatesResponse]:
        watcher = request.replica_id or "anonymous"
        log.info("gate watcher connected", extra={"fields": {"watcher": watcher}})
        try:
            async for snapshot in self._client.watch():
                yield control_pb2.WatchFeatureGatesResponse(
                    snapshot=convert.snapshot_to_pb(snapshot)
                )
        finally:
            log.info("gate watcher gone", extra={"fields": {"watcher": watcher}})

    async def GetGatePropagation(
        self, request: control_pb2.GetGatePropagationRequest, context: Any
    ) -> control_pb2.GetGatePropagationResponse:
        version, replicas = await self._propagation.current(include_gone=request.include_gone)
        return control_pb2.GetGatePropagationResponse(
            current_version=version,
            replicas=[convert.replica_to_pb(r) for r in replicas],
            converged=propagation_of(version, replicas).converged,
        )

    # ------------------------------------------------------------------ rollout

    async def GetRollout(
        self, request: control_pb2.GetRolloutRequest, context: Any
    ) -> control_pb2.GetRolloutResponse:
        overview = await self._rollout.overview()
        return control_pb2.GetRolloutResponse(
            current=convert.phase_to_pb(overview.current),
            history=[convert.phase_to_pb(record) for record in overview.history],
            repositories_in_rollout=overview.in_rollout,
            repositories_total=overview.total,
            in_force=overview.current is not None,
            repositories_ever_exposed=overview.ever_exposed,
            salt=overview.salt,
        )

    async def AdvanceRollout(
        self, request: control_pb2.AdvanceRolloutRequest, context: Any
    ) -> control_pb2.AdvanceRolloutResponse:
        result = await self._rollout.advance(convert.advance_from_pb(request), actor=_actor())
        return control_pb2.AdvanceRolloutResponse(
            current=convert.phase_to_pb(result.current),
            criteria=[convert.criterion_to_pb(c) for c in result.criteria],
        )

    async def RollbackRollout(
        self, request: control_pb2.RollbackRolloutRequest, context: Any
    ) -> control_pb2.RollbackRolloutResponse:
        current = await self._rollout.rollback(convert.rollback_from_pb(request), actor=_actor())
        return control_pb2.RollbackRolloutResponse(current=convert.phase_to_pb(current))

    async def IsRepoInRollout(
        self, request: control_pb2.IsRepoInRolloutRequest, context: Any
    ) -> control_pb2.IsRepoInRolloutResponse:
        url, phase, percentage = convert.membership_from_pb(request)
        view = await self._rollout.membership(url, phase=phase, percentage=percentage)
        return control_pb2.IsRepoInRolloutResponse(
            in_rollout=view.in_rollout,
            bucket=view.bucket / 100,
            phase=view.phase,
            ever_exposed=view.ever_exposed,
            reason=str(view.reason),
        )

    async def ListRolloutRepos(
        self, request: control_pb2.ListRolloutReposRequest, context: Any
    ) -> control_pb2.ListRolloutReposResponse:
        violations = Violations()
        phase, percentage = convert.what_if_from_pb(request, violations)
        violations.raise_if_any()
        query = f"rollout-repos:{phase}:{percentage}"
        after = self._pages.decode(request.page_token, query, str)
        size = page_size(request.page_size)
        urls = await self._rollout.members(
            phase=phase, percentage=percentage, after=after, limit=size + 1
        )
        response = control_pb2.ListRolloutReposResponse(repository_urls=urls[:size])
        if len(urls) > size:
            response.next_page_token = self._pages.encode(query, urls[size - 1])
        return response

    async def EvaluateRolloutCriteria(
        self, request: control_pb2.EvaluateRolloutCriteriaRequest, context: Any
    ) -> control_pb2.EvaluateRolloutCriteriaResponse:
        phase, criteria = await self._rollout.criteria(convert.criteria_phase_from_pb(request))
        return control_pb2.EvaluateRolloutCriteriaResponse(
            phase=phase,
            criteria=[convert.criterion_to_pb(c) for c in criteria],
            all_met=all(c.met for c in criteria if c.blocking),
        )

    # ------------------------------------------------------------------ alerts

    async def ListAlertRules(
        self, request: control_pb2.ListAlertRulesRequest, context: Any
    ) -> control_pb2.ListAlertRulesResponse:
        rules = await self._alerts.rules()
        return control_pb2.ListAlertRulesResponse(
            rules=[convert.alert_rule_to_pb(r) for r in rules],
            signals=[convert.signal_to_pb(s) for s in self._alerts.signals],
        )

    async def UpsertAlertRule(
        self, request: control_pb2.UpsertAlertRuleRequest, context: Any
    ) -> control_pb2.UpsertAlertRuleResponse:
        violations = Violations()
        check_mutation(violations, request_id=request.request_id, reason="", reason_required=False)
        rule = convert.alert_rule_from_pb(request.rule, violations)
        violations.raise_if_any()
        assert rule is not None
        stored, created = await self._alerts.upsert_rule(
            rule, request_id=request.request_id or None, actor=_actor()
        )
        return control_pb2.UpsertAlertRuleResponse(
            rule=convert.alert_rule_to_pb(stored), created=created
        )

    async def EvaluateAlerts(
        self, request: control_pb2.EvaluateAlertsRequest, context: Any
    ) -> control_pb2.EvaluateAlertsResponse:
        evaluation = await self._alerts.evaluate(wait=True)
        assert evaluation is not None  # waiting for the lock always evaluates
        return control_pb2.EvaluateAlertsResponse(
            alerts=[
                convert.alert_to_pb(t.alert, evaluation.rules.get(t.alert.rule_name), t.previous)
                for t in evaluation.transitions
            ],
            notifications_sent=evaluation.delivery.sent,
            notifications_failed=evaluation.delivery.failed,
            signals=[convert.signal_value_to_pb(n, v) for n, v in evaluation.values.items()],
        )

    async def ListActiveAlerts(
        self, request: control_pb2.ListActiveAlertsRequest, context: Any
    ) -> control_pb2.ListActiveAlertsResponse:
        alerts, rules = await self._alerts.alerts(active_only=True, before_id=None, limit=None)
        return control_pb2.ListActiveAlertsResponse(
            alerts=[convert.alert_to_pb(a, rules.get(a.rule_name)) for a in alerts]
        )

    async def ListAlertHistory(
        self, request: control_pb2.ListAlertHistoryRequest, context: Any
    ) -> control_pb2.ListAlertHistoryResponse:
        violations = Violations()
        check_text(violations, "rule_name", request.rule_name, max_chars=200)
        violations.raise_if_any()
        key = f"alert-history:{request.rule_name}"
        before = self._pages.decode(request.page_token, key, int)
        size = page_size(request.page_size)
        alerts, rules = await self._alerts.alerts(
            rule_name=request.rule_name, active_only=False, before_id=before, limit=size + 1
        )
        response = control_pb2.ListAlertHistoryResponse(
            alerts=[convert.alert_to_pb(a, rules.get(a.rule_name)) for a in alerts[:size]]
        )
        if len(alerts) > size:
            response.next_page_token = self._pages.encode(key, alerts[size - 1].alert_id)
        return response

    async def CreateSilence(
        self, request: control_pb2.CreateSilenceRequest, context: Any
    ) -> control_pb2.CreateSilenceResponse:
        rule_names, matchers, duration, comment = convert.silence_request_from_pb(request)
        now, silence = await self._alerts.create_silence(
            rule_names=rule_names,
            matchers=matchers,
            duration=duration,
            comment=comment,
            request_id=request.request_id or None,
            actor=_actor(),
        )
        return control_pb2.CreateSilenceResponse(silence=convert.silence_to_pb(silence, now=now))

    async def ExpireSilence(
        self, request: control_pb2.ExpireSilenceRequest, context: Any
    ) -> control_pb2.ExpireSilenceResponse:
        now, silence = await self._alerts.expire_silence(request.silence_id, actor=_actor())
        return control_pb2.ExpireSilenceResponse(silence=convert.silence_to_pb(silence, now=now))

    async def ListSilences(
        self, request: control_pb2.ListSilencesRequest, context: Any
    ) -> control_pb2.ListSilencesResponse:
        now, silences = await self._alerts.silences(include_expired=request.include_expired)
        return control_pb2.ListSilencesResponse(
            silences=[convert.silence_to_pb(s, now=now) for s in silences]
        )

    async def SendTestNotification(
        self, request: control_pb2.SendTestNotificationRequest, context: Any
    ) -> control_pb2.SendTestNotificationResponse:
        violations = Violations()
        channel = convert.channel_from_pb(request.channel, "channel", violations)
        check_text(violations, "message", request.message, max_chars=1000)
        violations.raise_if_any()
        assert channel is not None
        delivered, attempts, detail = await self._alerts.send_test(channel, request.message)
        return control_pb2.SendTestNotificationResponse(
            delivered=delivered, detail=detail, attempts=attempts
        )

    # ------------------------------------------------------------------ audit and health

    async def ListAuditEvents(
        self, request: control_pb2.ListAuditEventsRequest, context: Any
    ) -> control_pb2.ListAuditEventsResponse:
        query = convert.audit_query_from_pb(request)
        key = f"audit:{query}"
        before = self._pages.decode(request.page_token, key, int)
        size = page_size(request.page_size)
        records = await self._audit.page(query, before_id=before, limit=size + 1)
        response = control_pb2.ListAuditEventsResponse(
            events=[convert.audit_to_pb(r) for r in records[:size]]
        )
        if len(records) > size:
            response.next_page_token = self._pages.encode(key, records[size - 1].audit_id)
        return response

    async def GetSystemHealth(
        self, request: control_pb2.GetSystemHealthRequest, context: Any
    ) -> control_pb2.GetSystemHealthResponse:
        health, replicas = await self._health.assess()
        return convert.health_to_pb(health, replicas)
