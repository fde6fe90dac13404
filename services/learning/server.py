"""Wiring of the learning service: the one place its parts are built and connected."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from reviewlearn.learning.v1 import learning_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.gates import LearningGate
from services.learning.handlers import SERVICE, LearningHandlers
from services.learning.instruments import LearningInstruments
from services.learning.listener import FeedbackListener
from services.learning.settings import LearningSettings
from services.learning.storage.model_repository import ModelRepository
from services.learning.storage.pattern_repository import PatternRepository
from services.learning.storage.ranking_repository import RankingRepository
from services.learning.storage.read_repository import EvaluationRepository, ReadRepository
from services.learning.storage.state_repository import StateRepository
from services.learning.storage.transactions import transactional
from services.learning.usecases.current_state import CurrentState
from services.learning.usecases.evaluate_model import EvaluateModel
from services.learning.usecases.fit_model import FitModel
from services.learning.usecases.fold_feedback import Folder
from services.learning.usecases.mine_patterns import MinePatterns
from services.learning.usecases.rank_suggestions import RankSuggestions
from services.learning.usecases.read_metrics import ReadLearning
from services.learning.usecases.rollback_model import RollbackModel
from shared.db.engine import create_engine, create_session_factory
from shared.gates import GateClient
from shared.periodic import Periodic
from shared.rpc.runtime import ServiceRuntime
from shared.rpc.server import ServiceBinding


def build_server(
    settings: LearningSettings, *, engine: AsyncEngine | None = None
) -> ServiceRuntime:
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
    ranker = RankSuggestions(
        transaction=transactional(sessions, RankingRepository),
        state=state,
        gate=gate,
        instruments=instruments,
        settings=settings.ranking_settings(),
        executor=ThreadPoolExecutor(
            max_workers=settings.ranking_threads, thread_name_prefix="ranking"
        ),
    )
    # Abstract only to mypy: answer_unimplemented fills in RunJobs and ListJobRuns.
    handlers = LearningHandlers(  # type: ignore[abstract]
        ranker=ranker,
        reads=ReadLearning(
            transaction=transactional(sessions, ReadRepository),
            state=state,
            stale_after=timedelta(hours=settings.threshold_stale_hours),
        ),
        fitter=FitModel(
            transaction=transactional(sessions, ModelRepository),
            gate=gate,
            state=state,
            instruments=instruments,
            fit_parameters=fit_parameters,
            threshold_parameters=settings.threshold_parameters(),
            keep_models=settings.models_kept,
        ),
        evaluator=EvaluateModel(
            transaction=transactional(sessions, EvaluationRepository),
            fit_parameters=fit_parameters,
            policy=settings.suppression_policy(),
        ),
        rollback=RollbackModel(transaction=transactional(sessions, ModelRepository), state=state),
        pages=settings.page_tokens(),
    )

    async def fold() -> None:
        result = await folder.fold()
        if result.counts.findings or result.counts.events or result.counts.changes:
            state.mark_stale()

    folding = Periodic("learning-fold", fold, interval=settings.fold_poll_seconds)

    def on_notify(payload: str) -> None:
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
            "confidence_threshold_stale": current.last_tune is None
            or datetime.now(UTC) - current.last_tune
            > timedelta(hours=settings.threshold_stale_hours),
        }

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
            FeedbackListener(
                database_url=settings.require_database_url(),
                redis_url=settings.redis_url,
                on_notify=on_notify,
            ),
        ],
    )
