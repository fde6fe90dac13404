"""gRPC transport of the insights service: convert the request, call the answer, return it."""

from __future__ import annotations

from typing import Any

from reviewlearn.insights.v1 import insights_pb2, insights_pb2_grpc

from services.insights import convert
from services.insights.answers import InsightsAnswers
from services.insights.domain.windows import Window, window
from services.insights.usecases.refresh import InsightsRefresher
from shared.errors import Violations

SERVICE = insights_pb2.DESCRIPTOR.services_by_name["InsightsService"]
MAX_PATHS = 50


class InsightsHandlers(insights_pb2_grpc.InsightsServiceServicer):
    def __init__(
        self, *, answers: InsightsAnswers, refresher: InsightsRefresher, retention_days: int
    ) -> None:
        self._answers = answers
        self._refresher = refresher
        self._retention_days = retention_days

    def _window(self, request: Any, violations: Violations) -> Window | None:
        """The request's window, or None for the default (the last 30 days up to now)."""
        start = convert.optional_time(request.start_time, "start_time", violations)
        end = convert.optional_time(request.end_time, "end_time", violations)
        if start is None and end is None:
            return None
        return window(
            start=start,
            end=end,
            now=self._answers.default_window().end,
            default_days=self._answers.policies.default_window_days,
            retention_days=self._retention_days,
            violations=violations,
        )

    async def GetTeamMetrics(
        self, request: insights_pb2.GetTeamMetricsRequest, context: Any
    ) -> insights_pb2.GetTeamMetricsResponse:
        self._answers.require_enabled()
        violations = Violations()
        scope = convert.scope_from_pb(request.scope, violations)
        period = self._window(request, violations)
        violations.raise_if_any()
        return await self._answers.team_metrics(scope, period)

    async def GetTrends(
        self, request: insights_pb2.GetTrendsRequest, context: Any
    ) -> insights_pb2.GetTrendsResponse:
        self._answers.require_enabled()
        violations = Violations()
        scope = convert.scope_from_pb(request.scope, violations)
        weeks = request.weeks or self._answers.policies.trend_weeks
        if not 2 <= weeks <= self._retention_days // 7:
            violations.add(
                "weeks", f"must be between 2 and {self._retention_days // 7} (the retention)"
            )
        metrics = convert.trend_metrics_from_pb(list(request.metrics), violations)
        violations.raise_if_any()
        return await self._answers.trends(
            scope, weeks=weeks, metrics=metrics, per_category=request.per_category
        )

    async def GetLearningPaths(
        self, request: insights_pb2.GetLearningPathsRequest, context: Any
    ) -> insights_pb2.GetLearningPathsResponse:
        self._answers.require_enabled()
        violations = Violations()
        scope = convert.scope_from_pb(request.scope, violations, teams_only=True)
        max_paths = request.max_paths or self._answers.policies.max_paths
        if not 1 <= max_paths <= MAX_PATHS:
            violations.add("max_paths", f"must be between 1 and {MAX_PATHS}")
        violations.raise_if_any()
        return await self._answers.learning_paths(scope, max_paths=max_paths)

    async def GetRoi(
        self, request: insights_pb2.GetRoiRequest, context: Any
    ) -> insights_pb2.GetRoiResponse:
        self._answers.require_enabled()
        violations = Violations()
        scope = convert.scope_from_pb(request.scope, violations)
        period = self._window(request, violations)
        assumptions = convert.assumptions_from_pb(
            request.assumptions, self._answers.policies.roi, violations
        )
        violations.raise_if_any()
        return await self._answers.roi(scope, period, assumptions)

    async def GetInsightsReport(
        self, request: insights_pb2.GetInsightsReportRequest, context: Any
    ) -> insights_pb2.GetInsightsReportResponse:
        self._answers.require_enabled()
        violations = Violations()
        scope = convert.scope_from_pb(request.scope, violations, teams_only=True)
        violations.raise_if_any()
        return await self._answers.report(scope)

    async def RefreshInsights(
        self, request: insights_pb2.RefreshInsightsRequest, context: Any
    ) -> insights_pb2.RefreshInsightsResponse:
        self._answers.require_enabled()
        violations = Violations()
        scopes = [
            convert.scope_from_pb(scope, violations, field=f"scopes[{index}]")
            for index, scope in enumerate(request.scopes)
        ]
        parts = convert.refresh_parts_from_pb(list(request.parts), violations)
        violations.raise_if_any()
        outcome = await self._refresher.refresh(
            scopes=scopes,
            parts=parts,
            rebuild_rollups=request.rebuild_rollups,
            request_id=request.request_id,
        )
        return convert.refresh_to_pb(outcome)
