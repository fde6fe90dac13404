"""gRPC transport of the learning service: convert the request, call the use case, convert back."""

from __future__ import annotations

from typing import Any

from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from services.learning import convert
from services.learning.folding import Folder
from services.learning.pattern_mining import PATTERN_TYPES
from services.learning.reads import LearningReads
from services.learning.settings import LearningSettings
from services.learning.suggestions import SuggestionRanker
from services.learning.tuner import ConfidenceTuner
from shared.convert import timestamp_to_pb
from shared.errors import FieldViolation, InvalidArgument
from shared.pagination import page_size
from shared.rpc.interceptors import current_principal
from shared.rpc.server import answer_unimplemented

SERVICE = learning_pb2.DESCRIPTOR.services_by_name["LearningService"]


class LearningHandlers(learning_pb2_grpc.LearningServiceServicer):
    def __init__(
        self,
        *,
        ranker: SuggestionRanker,
        reads: LearningReads,
        tuner: ConfidenceTuner,
        folder: Folder,
        settings: LearningSettings,
    ) -> None:
        self._ranker = ranker
        self._reads = reads
        self._tuner = tuner
        self._folder = folder
        self._settings = settings
        self._pages = settings.page_tokens()

    async def RankSuggestions(
        self, request: learning_pb2.RankSuggestionsRequest, context: Any
    ) -> learning_pb2.RankSuggestionsResponse:
        outcome = await self._ranker.rank(convert.rank_request_from_pb(request))
        return convert.rank_outcome_to_pb(outcome)

    async def GetLearningMetrics(
        self, request: learning_pb2.GetLearningMetricsRequest, context: Any
    ) -> learning_pb2.GetLearningMetricsResponse:
        scope = convert.scope_from_pb(request.scope)
        dimension = convert.dimension_from_pb(request.dimension)
        query = f"metrics:{scope.scope_type}:{scope.name}:{dimension}:{request.key}"
        after = self._pages.decode(request.page_token, query, str)
        page = await self._reads.metrics(
            scope,
            dimension=dimension,
            key=request.key or None,
            after=after,
            limit=page_size(request.page_size),
        )
        response = learning_pb2.GetLearningMetricsResponse(
            metrics=[convert.metric_to_pb(view, scope) for view in page.metrics],
            watermark=page.watermark,
            backlog=page.backlog,
        )
        if page.last_update is not None:
            response.last_update_time.CopyFrom(timestamp_to_pb(page.last_update))
        if page.next_after is not None:
            response.next_page_token = self._pages.encode(query, page.next_after)
        return response

    async def GetConfidenceThresholds(
        self, request: learning_pb2.GetConfidenceThresholdsRequest, context: Any
    ) -> learning_pb2.GetConfidenceThresholdsResponse:
        view = await self._reads.thresholds(
            convert.scope_from_pb(request.scope), category=request.category or None
        )
        response = learning_pb2.GetConfidenceThresholdsResponse(
            thresholds=[convert.threshold_to_pb(t) for t in view.thresholds], stale=view.stale
        )
        if view.last_tune is not None:
            response.last_tune_time.CopyFrom(timestamp_to_pb(view.last_tune))
        return response

    async def TuneConfidenceThresholds(
        self, request: learning_pb2.TuneConfidenceThresholdsRequest, context: Any
    ) -> learning_pb2.TuneConfidenceThresholdsResponse:
        target: float | None = None
        if request.HasField("target_not_useful_rate"):
            target = request.target_not_useful_rate
            if not 0.0 < target < 1.0:
                raise InvalidArgument(
                    [FieldViolation("target_not_useful_rate", "must be between 0 and 1")]
                )
        principal = current_principal.get()
        outcome = await self._tuner.tune(
            parameters=self._settings.tune_parameters(target),
            dry_run=request.dry_run,
            reason=request.reason,
            actor=principal.token_id if principal else "unknown",
            request_id=request.request_id or None,
        )
        return convert.tune_outcome_to_pb(outcome, await self._reads.scope_names())

    async def ListPatterns(
        self, request: learning_pb2.ListPatternsRequest, context: Any
    ) -> learning_pb2.ListPatternsResponse:
        scope = convert.scope_from_pb(request.scope)
        kinds = {v: k for k, v in PATTERN_TYPES.items()}
        if request.kind != learning_pb2.PATTERN_KIND_UNSPECIFIED and request.kind not in kinds:
            raise InvalidArgument([FieldViolation("kind", "is not a known pattern kind")])
        query = f"patterns:{scope.scope_type}:{scope.name}:{request.kind}"
        after = self._pages.decode(request.page_token, query, (int, str))
        size = page_size(request.page_size)
        rows = await self._reads.patterns(
            scope,
            pattern_type=request.kind or None,
            after=after,
            limit=size + 1,
        )
        response = learning_pb2.ListPatternsResponse(
            patterns=[convert.pattern_to_pb(row, scope) for row in rows[:size]]
        )
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = self._pages.encode(
                query, (last.occurrences, last.pattern_key)
            )
        return response


answer_unimplemented(LearningHandlers, SERVICE, pending="the batch-jobs issue (RunJobs)")
