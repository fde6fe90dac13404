"""Wiring of the insights service: the one place its parts are built and connected."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reviewlearn.insights.v1 import insights_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.insights.answers import InsightsAnswers, Policies
from services.insights.cache import (
    INVALIDATION_CHANNEL,
    InsightsCache,
    RedisLayer,
    SecondLayer,
    TableLayer,
    TeamVersions,
)
from services.insights.dashboard.page import DashboardPage
from services.insights.gate import ControlPlaneGate, InsightsGate
from services.insights.handlers import SERVICE, InsightsHandlers
from services.insights.instruments import InsightsInstruments
from services.insights.settings import InsightsSettings
from services.insights.storage.insights_repository import InsightsRepository
from services.insights.storage.persisted_repository import PersistedInsightsRepository
from services.insights.storage.rollup_repository import RollupRepository
from services.insights.storage.transactions import rolled_back, transaction
from services.insights.usecases.fold_rollups import RollupFolder
from services.insights.usecases.refresh import InsightsRefresher, RefreshPolicy
from shared.db.engine import create_engine, create_session_factory
from shared.gates import GateClient
from shared.notifications import FEEDBACK_CHANNEL, ChannelListener, ChannelPublisher
from shared.periodic import Periodic
from shared.redis_namespace import RedisTarget
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding

if TYPE_CHECKING:
    from shared.redis_namespace import NamespacedRedis

CACHE_SWEEP_SECONDS = 600.0


def insights_gate(gates: GateClient) -> InsightsGate:
    """The gate every insights answer asks: the control plane's kill switch and ``insights``
    feature, and the environment's hard kill, from the shared gate client's snapshot."""
    return ControlPlaneGate(gates)


def _redis(settings: InsightsSettings) -> NamespacedRedis | None:
    target = RedisTarget.of(settings)
    if target is None:
        return None
    timeout = settings.redis_timeout_seconds
    return target.connect(socket_timeout=timeout, socket_connect_timeout=timeout)


def build_server(
    settings: InsightsSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
    db = engine or create_engine(settings)
    gates = GateClient.from_settings(settings, engine=db)
    sessions = create_session_factory(db)
    instruments = InsightsInstruments()
    redis = _redis(settings)
    versions = TeamVersions()
    table_layer = TableLayer(sessions) if redis is None else None
    second: SecondLayer | None = (
        RedisLayer(
            redis,
            timeout=settings.redis_timeout_seconds,
            retry_seconds=settings.redis_retry_seconds,
        )
        if redis is not None
        else table_layer
    )
    cache = InsightsCache(
        ttl_seconds=settings.cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
        second=second,
        versions=versions,
        instruments=instruments,
    )
    publisher = ChannelPublisher(engine=db, redis=redis)
    announcements: set[asyncio.Task[None]] = set()
    dirty_teams: set[int] = set()

    def invalidate(moved: Mapping[int, int]) -> None:
        """New versions from this replica: take them in, and tell the other replicas."""
        versions.update(moved)
        task = asyncio.get_running_loop().create_task(
            publisher.publish(INVALIDATION_CHANNEL, TeamVersions.message(moved))
        )
        announcements.add(task)
        task.add_done_callback(announcements.discard)

    def folded(moved: dict[int, int]) -> None:
        invalidate(moved)
        dirty_teams.update(moved)

    folder = RollupFolder(
        transaction=transaction(sessions, RollupRepository),
        rolled_back=rolled_back(sessions, RollupRepository),
        instruments=instruments,
        on_change=folded,
    )
    refresher = InsightsRefresher(
        transaction=transaction(sessions, PersistedInsightsRepository),
        rollups=folder,
        policy=RefreshPolicy(
            rates=settings.rate_policy(),
            paths=settings.path_policy(),
            roi=settings.roi_assumptions(),
            trend_weeks=settings.trend_weeks,
            max_paths=settings.max_learning_paths,
            archive_days=settings.trend_archive_days,
            min_group_size=settings.min_group_size,
        ),
        on_change=invalidate,
    )
    reads = transaction(sessions, InsightsRepository)
    answers = InsightsAnswers(
        reads=reads,
        cache=cache,
        gate=insights_gate(gates),
        policies=Policies(
            rates=settings.rate_policy(),
            trends=settings.trend_policy(),
            paths=settings.path_policy(),
            roi=settings.roi_assumptions(),
            default_window_days=settings.default_window_days,
            trend_weeks=settings.trend_weeks,
            max_paths=settings.max_learning_paths,
        ),
        instruments=instruments,
    )
    handlers = InsightsHandlers(
        answers=answers, refresher=refresher, retention_days=settings.retention_days
    )

    async def fold() -> None:
        await folder.fold()

    folding = Periodic("insights-fold", fold, interval=settings.rollup_poll_seconds)

    def on_notify(channel: str, payload: str) -> None:
        if channel == FEEDBACK_CHANNEL:
            folding.wake()
        else:
            versions.update(TeamVersions.parse(payload))

    async def poll_versions() -> None:
        async with reads() as repository:
            versions.update(await repository.team_versions())

    async def refresh_paths() -> None:
        if dirty_teams:
            teams = list(dirty_teams)
            dirty_teams.clear()
            await refresher.refresh_teams(team_ids=teams, parts=["learning_paths"])

    async def sweep_cache() -> None:
        if table_layer is not None:
            await table_layer.sweep()

    async def health_metrics() -> dict[str, Any]:
        return {
            # None before any lookup: an idle cache is not a cold one (the hit-rate alert).
            "insights_cache_hit_rate": round(instruments.hit_rate, 4)
            if instruments.hits + instruments.misses
            else None,
            "last_rollup_fold": str(await folder.last_fold()),
        }

    async def close_redis() -> None:
        if redis is not None:
            await redis.aclose()

    return ServiceRuntime(
        settings=settings,
        engine=db,
        owns_engine=engine is None,
        gates=gates,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: insights_pb2_grpc.add_InsightsServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
        health_metrics=health_metrics,
        background=[
            folding,
            # Versions are loaded before the first answer: a replica that started with none
            # would cache under version 0 and miss its own entries once the poll caught up.
            Periodic(
                "insights-versions",
                poll_versions,
                interval=settings.cache_staleness_seconds,
                first_run_in_start=True,
            ),
            Periodic(
                "insights-paths",
                refresh_paths,
                interval=settings.paths_refresh_seconds,
                run_at_start=False,
            ),
            Periodic("insights-cache-sweep", sweep_cache, interval=CACHE_SWEEP_SECONDS),
            ChannelListener(
                database_url=settings.require_database_url(),
                redis=RedisTarget.of(settings),
                channels=[FEEDBACK_CHANNEL, INVALIDATION_CHANNEL],
                on_notify=on_notify,
                name="insights-listener",
            ),
        ],
        cleanups=[close_redis],
        http_routes={"/dashboard": DashboardPage(answers=answers, instruments=instruments)},
    )
