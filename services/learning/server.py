"""Wiring of the learning service: the one place its parts are built and connected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from reviewlearn.learning.v1 import learning_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.folding import Folder
from services.learning.gates import LearningGate
from services.learning.handlers import SERVICE, LearningHandlers
from services.learning.instruments import LearningInstruments
from services.learning.listener import FeedbackListener
from services.learning.model_store import ModelStore
from services.learning.pattern_mining import PatternMiner
from services.learning.reads import LearningReads
from services.learning.settings import LearningSettings
from services.learning.suggestions import SuggestionRanker
from services.learning.tuner import ConfidenceTuner
from shared.db.engine import create_engine, create_session_factory
from shared.finding_input import Limits
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
    instruments = LearningInstruments()
    models = ModelStore(sessions=sessions, parameters=settings.model_parameters())
    folder = Folder(sessions=sessions, instruments=instruments)
    miner = PatternMiner(
        sessions=sessions,
        models=models,
        min_occurrences=settings.pattern_min_occurrences,
        alpha=settings.pattern_alpha,
        emerging_ratio=settings.pattern_emerging_ratio,
        window=timedelta(days=settings.pattern_window_days),
    )
    ranker = SuggestionRanker(
        sessions=sessions,
        models=models,
        gate=LearningGate(gates),
        instruments=instruments,
        limits=Limits(max_text_chars=settings.max_text_chars),
        max_findings=settings.max_findings_per_ranking,
        severity_weights=settings.severity_weights,
        line_window=settings.near_duplicate_line_window,
        max_hamming=settings.near_duplicate_max_hamming,
    )
    # Abstract only to mypy: answer_unimplemented fills in RunJobs and ListJobRuns.
    handlers = LearningHandlers(  # type: ignore[abstract]
        ranker=ranker,
        reads=LearningReads(
            sessions=sessions,
            models=models,
            stale_after=timedelta(hours=settings.threshold_stale_hours),
        ),
        tuner=ConfidenceTuner(sessions=sessions, models=models, instruments=instruments),
        folder=folder,
        settings=settings,
    )

    async def fold() -> None:
        result = await folder.fold()
        if result.counts.findings or result.counts.events or result.counts.changes:
            models.mark_stale()

    folding = Periodic("learning-fold", fold, interval=settings.fold_poll_seconds)

    def on_notify(payload: str) -> None:
        folding.wake()

    async def refresh_model() -> None:
        await models.refresh_if_stale(max_age=settings.model_refresh_seconds)

    async def refresh_patterns() -> None:
        await miner.refresh()

    async def health_metrics() -> dict[str, Any]:
        model = await models.current()
        return {
            "watermark": model.watermark,
            "model_version": model.version,
            "last_learning_update": model.built_at.isoformat(),
            "confidence_threshold_stale": model.last_tune is None
            or datetime.now(UTC) - model.last_tune
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
            Periodic("learning-model", refresh_model, interval=settings.model_rebuild_tick_seconds),
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
