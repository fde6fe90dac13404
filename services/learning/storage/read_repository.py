"""The reads of GetLearningMetrics, GetConfidenceThresholds and ListPatterns, in one place so
that each RPC runs in one transaction."""

from __future__ import annotations

from sqlalchemy import func, select

from services.learning.storage.model_repository import ModelRepository
from services.learning.storage.pattern_repository import PatternRepository
from services.learning.storage.state_repository import StateRepository
from shared.db.models import Feedback


class ReadRepository(StateRepository, PatternRepository):
    async def backlog(self, watermark: int) -> int:
        """Feedback events recorded but not yet folded."""
        count = await self._session.execute(
            select(func.count()).select_from(Feedback).where(Feedback.tx_id >= watermark)
        )
        return int(count.scalar_one())


class EvaluationRepository(ReadRepository, ModelRepository):
    """EvaluateModel reads scopes and the outcome log in one transaction."""
