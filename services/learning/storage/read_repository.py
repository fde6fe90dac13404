"""The reads of GetLearningMetrics, GetConfidenceThresholds and ListPatterns, in one place so
that each RPC runs in one transaction."""

from __future__ import annotations

from sqlalchemy import text

from services.learning.storage.model_repository import ModelRepository
from services.learning.storage.pattern_repository import PatternRepository
from services.learning.storage.state_repository import StateRepository

_BACKLOG = """
SELECT count(*) FROM suggestion_feedback fb, fold_state s
WHERE s.stream = 'feedback' AND fb.tx_id >= s.watermark
  AND (fb.tx_id >= s.seen_through OR fb.tx_id = ANY(s.in_progress))
"""


class ReadRepository(StateRepository, PatternRepository):
    async def backlog(self) -> int:
        """Feedback events recorded but not yet folded: above the watermark, and not seen by
        the last fold (which folds every visible row, even while a long transaction elsewhere
        in the cluster holds the watermark back)."""
        count = await self._session.execute(text(_BACKLOG))
        return int(count.scalar_one())


class EvaluationRepository(ReadRepository, ModelRepository):
    """EvaluateModel reads scopes and the outcome log in one transaction."""
