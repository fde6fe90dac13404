"""gRPC transport of the control plane: convert the request, call the use case, convert back.

The alert RPCs belong to the alerting issue and answer UNIMPLEMENTED until it lands; the
heartbeats and samples they will read are already recorded (``replica_heartbeats``,
``replica_samples``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from reviewlearn.control.v1 import control_pb2, control_pb2_grpc

from services.control import convert
from services.control.domain.replicas import propagation_of
from services.control.usecases.audit import AuditLog
from services.control.usecases.gates import GateCommands
from services.control.usecases.health import SystemHealthCheck
from services.control.usecases.propagation import PropagationTracker
from services.control.usecases.rollout import RolloutService
from shared.errors import Violations
from shared.gates.client import GateClient
from shared.gates.model import GateSnapshot
from shared.pagination import PageTokens, page_size
from shared.rpc.interceptors import current_principal
from shared.rpc.server import answer_unimplemented

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
    ) -> None:
        self._pages = pages
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


answer_unimplemented(ControlHandlers, SERVICE, pending="a later change of the control plane")
