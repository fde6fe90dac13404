"""Wiring of the learning service: the one place its parts are built and connected."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reviewlearn.learning.v1 import learning_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.gates import LearningGate
from services.learning.handlers import SERVICE, LearningHandlers
from services.learning.insights_client import InsightsClient
from services.learning.instruments import LearningInstruments
from services.learning.settings import LearningSettings
from services.learning.storage.job_repository import JobRunRepository, MaintenanceRepository
from services.learning.storage.model_repository import ModelRepository
from services.learning.storage.pattern_repository import PatternRepository
from services.learning.storage.ranking_repository import RankingRepository
from services.learning.storage.read_repository import EvaluationRepository, ReadRepository
from services.learning.storage.state_repository import StateRepository
from services.learning.storage.transactions import transactional
from services.learning.usecases.batch_jobs import BatchJobs
from services.learning.usecases.current_state import CurrentState
from services.learning.usecases.evaluate_model import EvaluateModel
from services.learning.usecases.fit_model import FitModel
from services.learning.usecases.fold_feedback import Folder
from services.learning.usecases.mine_patterns import MinePatterns
from services.learning.usecases.rank_suggestions import RankSuggestions
from services.learning.usecases.read_metrics import ReadLearning
from services.learning.usecases.rollback_model import RollbackModel
from services.learning.usecases.run_jobs import RunJobs, RunJobsRequest
from services.learning.usecases.schedule_jobs import JobScheduler
from shared.db.engine import create_engine, create_session_factory
from shared.gates import GateClient
from shared.notifications import FEEDBACK_CHANNEL, ChannelListener
from shared.periodic import Periodic
from shared.redis_namespace import RedisTarget
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding

if TYPE_CHECKING:
    from services.learning.domain.jobs import Frequency
    from services.learning.usecases.run_jobs import JobRunView


def build_server(
    settings: LearningSettings,
    *,
    engine: AsyncEngine | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ServiceRuntime:
    """``clock`` drives the job scheduler (tests move it instead of sleeping)."""
    db = engine or create_engine(settings)
    sessions = create_session_factory(db)
    gates = GateClient.from_settings(settings, engine=db)
    gate = LearningGate(gates)
    instruments = LearningInstruments()
    fit_parameters = settings.fit_parameters()
    state = CurrentState(
        transaction=transactional(sessions, StateRepository),
        prior_variance=fit_parameters.default_prior_variance,
    )
    folder = Folder(sessions=sessions, instruments=instruments)
    miner = MinePatterns(
        transaction=transactional(sessions, PatternRepository),
        state=state,
        min_occurrences=settings.pattern_min_occurrences,
        alpha=settings.pattern_alpha,
        emerging_ratio=settings.pattern_emerging_ratio,
        window=timedelta(days=settings.pattern_window_days),
    )
    ranking_threads = ThreadPoolExecutor(
        max_workers=settings.ranking_threads, thread_name_prefix="ranking"
    )
    ranker = RankSuggestions(
        transaction=transactional(sessions, RankingRepository),
        state=state,
        gate=gate,
        instruments=instruments,
        settings=settings.ranking_settings(),
        executor=ranking_threads,
    )
    fitter = FitModel(
        transaction=transactional(sessions, ModelRepository),
        gate=gate,
        state=state,
        instruments=instruments,
        fit_parameters=fit_parameters,
        threshold_parameters=settings.threshold_parameters(),
        keep_models=settings.models_kept,
    )
    insights = InsightsClient(
        address=settings.insights_address,
        token=settings.insights_bearer(),
        timeout_seconds=settings.insights_timeout_seconds,
    )
    jobs = RunJobs(
        transaction=transactional(sessions, JobRunRepository),
        actions=BatchJobs(
            folder=folder,
            state=state,
            miner=miner,
            tuner=fitter,
            insights=insights,
            directory=transactional(sessions, JobRunRepository),
            maintenance=transactional(sessions, MaintenanceRepository),
            job_run_retention=timedelta(days=settings.job_run_retention_days),
            reconcile_repositories=settings.job_reconcile_repositories,
        ).actions(),
        gate=gate,
        instruments=instruments,
        retry=settings.job_retry(),
        holder=f"learning jobs {settings.replica_id or socket.gethostname()}:{os.getpid()}",
    )

    async def fire(frequency: Frequency, due: datetime) -> tuple[JobRunView, ...]:
        request = RunJobsRequest(
            request_id=None,
            frequency=frequency,
            job_names=(),
            repositories=None,
            scheduled_time=due,
            caller="scheduler",
        )
        return (await jobs.run(request)).runs

    scheduler = (
        JobScheduler(
            schedules=settings.job_schedules(),
            fire=fire,
            clock=clock or (lambda: datetime.now(UTC)),
        )
        if settings.job_scheduler_enabled
        else None
    )
    handlers = LearningHandlers(
        ranker=ranker,
        reads=ReadLearning(
            transaction=transactional(sessions, ReadRepository),
            state=state,
            stale_after=timedelta(hours=settings.threshold_stale_hours),
        ),
        fitter=fitter,
        evaluator=EvaluateModel(
            transaction=transactional(sessions, EvaluationRepository),
            fit_parameters=fit_parameters,
            policy=settings.suppression_policy(),
        ),
        rollback=RollbackModel(transaction=transactional(sessions, ModelRepository), state=state),
        jobs=jobs,
        pages=settings.page_tokens(),
        ranking_threads=ranking_threads,
    )

    async def fold() -> None:
        result = await folder.fold()
        if result.counts.findings or result.counts.events or result.counts.changes:
            state.mark_stale()

    folding = Periodic("learning-fold", fold, interval=settings.fold_poll_seconds)

    def on_notify(channel: str, payload: str) -> None:
        folding.wake()

    async def refresh_state() -> None:
        await state.refresh_if_stale(max_age=settings.model_refresh_seconds)

    async def refresh_patterns() -> None:
        if (await gate.check(feature="patterns", repository_url="")).enabled:
            await miner.refresh()

    async def health_metrics() -> dict[str, Any]:
        current = await state.current()
        return {
            "watermark": current.watermark,
            "model_version": current.model.version,
            # When feedback was last folded in (not when this process last reloaded).
            "last_learning_update": current.last_fold.isoformat() if current.last_fold else None,
            "learning_update_p95_seconds": instruments.fold_p95(),
            # The alert on a watermark held back by a transaction elsewhere reads this.
            "fold_horizon_held_seconds": folder.horizon_held_seconds(),
            "confidence_threshold_stale": current.last_tune is None
            or datetime.now(UTC) - current.last_tune
            > timedelta(hours=settings.threshold_stale_hours),
            "job_scheduler": scheduler.state() if scheduler is not None else "off",
        }

    async def tick() -> None:
        if scheduler is not None:
            await scheduler.tick()

    return ServiceRuntime(
        settings=settings,
        engine=db,
        owns_engine=engine is None,
        gates=gates,
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: learning_pb2_grpc.add_LearningServiceServicer_to_server(
                    handlers, server
                ),
            )
        ],
        health_metrics=health_metrics,
        background=[
            folding,
            Periodic("learning-state", refresh_state, interval=settings.model_rebuild_tick_seconds),
            # Not at start: mining imports SciPy, which a process that only ranks never needs.
            Periodic(
                "learning-patterns",
                refresh_patterns,
                interval=settings.patterns_refresh_seconds,
                run_at_start=False,
            ),
            ChannelListener(
                database_url=settings.require_database_url(),
                redis=RedisTarget.of(settings),
                channels=[FEEDBACK_CHANNEL],
                on_notify=on_notify,
                name="feedback-listener",
            ),
            *(
                # Not at start: under `reviewlearn up` the insights service may not be serving
                # yet, and a slot that failed stays failed until the next one.
                [
                    Periodic(
                        "learning-job-scheduler",
                        tick,
                        interval=settings.job_scheduler_tick_seconds,
                        run_at_start=False,
                    )
                ]
                if scheduler is not None
                else []
            ),
        ],
        cleanups=[insights.close],
    )
