"""Answers insight requests: gate, resolve the scope, look in the cache, compute on a miss.

The one place between the transport (handlers, the dashboard) and the use cases. Answers are
cached as serialized protobuf responses, so a hit costs a dictionary lookup and a parse.
Each computation runs in one read transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar

from cachetools import TTLCache
from google.protobuf.message import Message
from reviewlearn.insights.v1 import insights_pb2

from services.insights import convert
from services.insights.cache import InsightsCache
from services.insights.domain.learning_paths import PathPolicy
from services.insights.domain.rates import RatePolicy
from services.insights.domain.roi import RoiAssumptions
from services.insights.domain.scopes import ResolvedScope, ScopeRef
from services.insights.domain.trends import Trend, TrendMetric, TrendPolicy
from services.insights.domain.windows import Window
from services.insights.gate import InsightsGate, require_insights
from services.insights.instruments import InsightsInstruments
from services.insights.usecases.learning_paths import PathReads, PathsView, read_paths
from services.insights.usecases.reads import OutcomeRow, RollupReads
from services.insights.usecases.roi import roi, roi_from_rows
from services.insights.usecases.team_metrics import team_metrics
from services.insights.usecases.trends import (
    TrendQuery,
    TrendSeries,
    analyse_series,
    weekly_series,
)
from shared.convert import timestamp_to_pb
from shared.errors import NotFound

M = TypeVar("M", bound=Message)

REPORT_PER_CATEGORY = False
"""The report's trends are every metric for the whole team; per category they are a GetTrends
call away (``per_category``). Each series costs SciPy and pymannkendall a few milliseconds, and
the uncached report must stay within its latency budget."""


class InsightsReads(RollupReads, PathReads, Protocol):
    async def teams(self) -> list[tuple[int, str]]: ...


Reads = Callable[[], AbstractAsyncContextManager[InsightsReads]]


@dataclass(frozen=True)
class Policies:
    rates: RatePolicy
    trends: TrendPolicy
    paths: PathPolicy
    roi: RoiAssumptions
    default_window_days: int
    trend_weeks: int
    max_paths: int


class InsightsAnswers:
    def __init__(
        self,
        *,
        reads: Reads,
        cache: InsightsCache,
        gate: InsightsGate,
        policies: Policies,
        instruments: InsightsInstruments,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reads = reads
        self._cache = cache
        self._gate = gate
        self._policies = policies
        self._instruments = instruments
        self._clock = clock
        # Teams and repositories never change their ids: a found scope is remembered.
        self._scopes: TTLCache[ScopeRef, ResolvedScope] = TTLCache(maxsize=50_000, ttl=3600)

    @property
    def policies(self) -> Policies:
        return self._policies

    def require_enabled(self) -> None:
        require_insights(self._gate)

    async def resolve(self, ref: ScopeRef) -> ResolvedScope:
        found = self._scopes.get(ref)
        if found is None:
            async with self._reads() as reads:
                found = await reads.resolve(ref)
            if found is None:
                raise NotFound(f"no {ref.label} is known", reason="SCOPE_NOT_FOUND")
            self._scopes[ref] = found
        return found

    async def teams(self) -> list[str]:
        async with self._reads() as reads:
            return [name for _, name in await reads.teams()]

    def default_window(self) -> Window:
        now = self._clock()
        return Window(now - timedelta(days=self._policies.default_window_days), now)

    async def _answer(
        self,
        *,
        rpc: str,
        table: str,
        kind: str,
        ref: ScopeRef,
        params: str,
        parse: Callable[[bytes], M],
        compute: Callable[[InsightsReads, ResolvedScope], Awaitable[M]],
    ) -> M:
        started = time.perf_counter()
        try:
            self.require_enabled()
            scope = await self.resolve(ref)
            key = self._cache.key(kind, scope, params)
            cached = await self._cache.get(table, key)
            if cached is not None:
                answer = parse(cached)
                answer.from_cache = True  # type: ignore[attr-defined]
                return answer
            computing = time.perf_counter()
            async with self._reads() as reads:
                answer = await compute(reads, scope)
            self._instruments.generation_duration.record(
                time.perf_counter() - computing, {"insight": kind}
            )
            await self._cache.put(table, key, answer.SerializeToString())
            return answer
        finally:
            self._instruments.endpoint_latency.record(
                time.perf_counter() - started, {"endpoint": rpc}
            )

    # ------------------------------------------------------------ the RPCs

    async def team_metrics(
        self, ref: ScopeRef, window: Window | None
    ) -> insights_pb2.GetTeamMetricsResponse:
        async def compute(
            reads: InsightsReads, scope: ResolvedScope
        ) -> insights_pb2.GetTeamMetricsResponse:
            view = await team_metrics(
                reads, scope, window or self.default_window(), self._policies.rates
            )
            return convert.team_metrics_to_pb(view)

        return await self._answer(
            rpc="GetTeamMetrics",
            table="cached_metrics",
            kind="metrics",
            ref=ref,
            params=_window_key(window),
            parse=insights_pb2.GetTeamMetricsResponse.FromString,
            compute=compute,
        )

    async def trends(
        self, ref: ScopeRef, *, weeks: int, metrics: Sequence[TrendMetric], per_category: bool
    ) -> insights_pb2.GetTrendsResponse:
        async def compute(
            reads: InsightsReads, scope: ResolvedScope
        ) -> insights_pb2.GetTrendsResponse:
            return convert.trends_to_pb(
                await self._trends(reads, scope, self._trend_query(weeks, metrics, per_category))
            )

        return await self._answer(
            rpc="GetTrends",
            table="cached_trends",
            kind="trends",
            ref=ref,
            params=f"{self._today()}:{weeks}:{_metrics_key(metrics)}:{per_category}",
            parse=insights_pb2.GetTrendsResponse.FromString,
            compute=compute,
        )

    async def learning_paths(
        self, ref: ScopeRef, *, max_paths: int
    ) -> insights_pb2.GetLearningPathsResponse:
        async def compute(
            reads: InsightsReads, scope: ResolvedScope
        ) -> insights_pb2.GetLearningPathsResponse:
            return convert.paths_to_pb(await self._paths(reads, scope, max_paths))

        return await self._answer(
            rpc="GetLearningPaths",
            table="cached_paths",
            kind="paths",
            ref=ref,
            params=f"{self._today()}:{max_paths}",
            parse=insights_pb2.GetLearningPathsResponse.FromString,
            compute=compute,
        )

    async def roi(
        self, ref: ScopeRef, window: Window | None, assumptions: RoiAssumptions
    ) -> insights_pb2.GetRoiResponse:
        async def compute(
            reads: InsightsReads, scope: ResolvedScope
        ) -> insights_pb2.GetRoiResponse:
            return await self._roi(reads, scope, window or self.default_window(), assumptions)

        return await self._answer(
            rpc="GetRoi",
            table="cached_metrics",
            kind="roi",
            ref=ref,
            params=f"{_window_key(window)}:{convert.assumptions_key(assumptions)}",
            parse=insights_pb2.GetRoiResponse.FromString,
            compute=compute,
        )

    async def report(self, ref: ScopeRef) -> insights_pb2.GetInsightsReportResponse:
        """What the dashboard shows; one cache entry for the whole report."""

        async def compute(
            reads: InsightsReads, scope: ResolvedScope
        ) -> insights_pb2.GetInsightsReportResponse:
            window = self.default_window()
            started = time.perf_counter()
            query = self._trend_query(
                self._policies.trend_weeks, tuple(TrendMetric), REPORT_PER_CATEGORY
            )
            series = await weekly_series(reads, scope, query)
            # The trend statistics (CPU, in a worker thread) run while the rest is read.
            analysing = asyncio.ensure_future(self._analyse(series, started))
            try:
                rows = await reads.outcome_counts(scope, window.first_day, window.last_day)
                metrics = convert.team_metrics_to_pb(
                    await team_metrics(reads, scope, window, self._policies.rates, rows)
                )
                paths = convert.paths_to_pb(
                    await self._paths(reads, scope, self._policies.max_paths)
                )
                money = await self._roi(reads, scope, window, self._policies.roi, rows)
                weekly = convert.trends_to_pb(await analysing)
            finally:
                if not analysing.done():  # a read failed: nobody waits for the statistics
                    analysing.cancel()
                elif not analysing.cancelled():
                    analysing.exception()  # retrieved, so a failure of both is not logged twice
            return insights_pb2.GetInsightsReportResponse(
                metrics=metrics,
                trends=weekly,
                learning_paths=paths,
                roi=money,
                generate_time=timestamp_to_pb(self._clock()),
            )

        return await self._answer(
            rpc="GetInsightsReport",
            table="cached_metrics",
            kind="report",
            ref=ref,
            params=str(self._today()),
            parse=insights_pb2.GetInsightsReportResponse.FromString,
            compute=compute,
        )

    # ------------------------------------------------------------ computations

    def _today(self) -> date:
        return self._clock().astimezone(UTC).date()

    def _trend_query(
        self, weeks: int, metrics: Sequence[TrendMetric], per_category: bool
    ) -> TrendQuery:
        return TrendQuery(
            today=self._today(), weeks=weeks, metrics=metrics, per_category=per_category
        )

    async def _trends(
        self, reads: InsightsReads, scope: ResolvedScope, query: TrendQuery
    ) -> list[Trend]:
        started = time.perf_counter()
        return await self._analyse(await weekly_series(reads, scope, query), started)

    async def _analyse(self, series: TrendSeries, started: float) -> list[Trend]:
        """The statistics of ``series`` in a worker thread; ``started``: when its reads began."""
        result = await asyncio.to_thread(analyse_series, series, self._policies.trends)
        self._instruments.trend_duration.record(time.perf_counter() - started)
        return result

    async def _paths(self, reads: InsightsReads, scope: ResolvedScope, max_paths: int) -> PathsView:
        started = time.perf_counter()
        view = await read_paths(
            reads,
            team_id=scope.team_id,
            today=self._clock().astimezone(UTC).date(),
            policy=self._policies.paths,
            max_paths=max_paths,
        )
        self._instruments.path_duration.record(time.perf_counter() - started)
        return view

    async def _roi(
        self,
        reads: InsightsReads,
        scope: ResolvedScope,
        window: Window,
        assumptions: RoiAssumptions,
        rows: list[OutcomeRow] | None = None,
    ) -> insights_pb2.GetRoiResponse:
        started = time.perf_counter()
        view = (
            roi_from_rows(rows, window, assumptions)
            if rows is not None
            else await roi(reads, scope, window, assumptions)
        )
        self._instruments.roi_duration.record(time.perf_counter() - started)
        return convert.roi_to_pb(view)


def _window_key(window: Window | None) -> str:
    if window is None:
        return "default"
    return f"{window.start.timestamp():.0f}-{window.end.timestamp():.0f}"


def _metrics_key(metrics: Sequence[TrendMetric]) -> str:
    return ",".join(str(int(m)) for m in metrics)
