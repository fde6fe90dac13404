"""gRPC transport of the learning service: convert the request, call the use case, convert back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar

from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from services.learning import convert
from services.learning.domain.jobs import JobStatus
from services.learning.usecases.evaluate_model import EvaluateModel
from services.learning.usecases.fit_model import FitModel, TuneRequest
from services.learning.usecases.mine_patterns import PATTERN_TYPES
from services.learning.usecases.rank_suggestions import RankSuggestions
from services.learning.usecases.read_metrics import ReadLearning
from services.learning.usecases.rollback_model import RollbackModel
from services.learning.usecases.run_jobs import JobRunView, RunJobs
from shared.convert import timestamp_to_pb
from shared.errors import FieldViolation, InvalidArgument
from shared.pagination import PageTokens, page_size
from shared.rpc.interceptors import current_principal

SERVICE = learning_pb2.DESCRIPTOR.services_by_name["LearningService"]

T = TypeVar("T")

CONVERT_OFF_LOOP_AT = 2_000
"""Findings from which a ranking's request and answer are converted on a ranking thread: at
10,000 that is tens of milliseconds of Python the event loop (health checks, other calls)
would otherwise wait for; a smaller one converts faster than the hand-off to a thread costs."""


class LearningHandlers(learning_pb2_grpc.LearningServiceServicer):
    def __init__(
        self,
        *,
        ranker: RankSuggestions,
        reads: ReadLearning,
        fitter: FitModel,
        evaluator: EvaluateModel,
        rollback: RollbackModel,
        jobs: RunJobs,
        pages: PageTokens,
        ranking_threads: Executor,
    ) -> None:
        self._ranker = ranker
        self._reads = reads
        self._fitter = fitter
        self._evaluator = evaluator
        self._rollback = rollback
        self._jobs = jobs
        self._pages = pages
        self._ranking_threads = ranking_threads

    async def RankSuggestions(
        self, request: learning_pb2.RankSuggestionsRequest, context: Any
    ) -> learning_pb2.RankSuggestionsResponse:
        large = len(request.findings) + len(request.finding_ids) >= CONVERT_OFF_LOOP_AT
        ranking = await self._converted(partial(convert.rank_request_from_pb, request), large)
        outcome = await self._ranker.rank(ranking, time_remaining=context.time_remaining())
        answer = partial(convert.rank_outcome_to_pb, outcome, explain=ranking.options.explain)
        return await self._converted(answer, large)

    async def _converted(self, conversion: Callable[[], T], off_loop: bool) -> T:
        if not off_loop:
            return conversion()
        return await asyncio.get_running_loop().run_in_executor(self._ranking_threads, conversion)

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
        if view.model is not None:
            response.model.CopyFrom(convert.model_summary_to_pb(view.model))
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
        outcome = await self._fitter.tune(
            TuneRequest(
                request_id=request.request_id or None,
                dry_run=request.dry_run,
                target_not_useful_rate=target,
                reason=request.reason,
                actor=principal.token_id if principal else "unknown",
            )
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

    async def EvaluateModel(
        self, request: learning_pb2.EvaluateModelRequest, context: Any
    ) -> learning_pb2.EvaluateModelResponse:
        evaluation = await self._evaluator.evaluate(convert.evaluate_request_from_pb(request))
        return convert.evaluation_to_pb(evaluation)

    async def RollbackModel(
        self, request: learning_pb2.RollbackModelRequest, context: Any
    ) -> learning_pb2.RollbackModelResponse:
        active, previous = await self._rollback.rollback(version=request.version or None)
        return learning_pb2.RollbackModelResponse(active_version=active, previous_version=previous)

    async def RunJobs(
        self, request: learning_pb2.RunJobsRequest, context: Any
    ) -> learning_pb2.RunJobsResponse:
        principal = current_principal.get()
        caller = principal.token_id if principal else "unknown"
        outcome = await self._jobs.run(convert.run_jobs_request_from_pb(request, caller))
        return learning_pb2.RunJobsResponse(
            runs=[convert.job_run_to_pb(view) for view in outcome.runs],
            replayed=outcome.replayed,
        )

    async def ListJobRuns(
        self, request: learning_pb2.ListJobRunsRequest, context: Any
    ) -> learning_pb2.ListJobRunsResponse:
        status = None
        if request.status != learning_pb2.JOB_STATUS_UNSPECIFIED:
            try:
                status = JobStatus(request.status)
            except ValueError:
                raise InvalidArgument(
                    [FieldViolation("status", "is not a known job status")]
                ) from None
        query = f"jobs:{request.job_name}:{request.status}"
        before = self._pages.decode(request.page_token, query, int)
        size = page_size(request.page_size)
        records = await self._jobs.runs(
            job_name=request.job_name or None, status=status, before_id=before, limit=size + 1
        )
        response = learning_pb2.ListJobRunsResponse(
            runs=[convert.job_run_to_pb(JobRunView(r)) for r in records[:size]]
        )
        if len(records) > size:
            response.next_page_token = self._pages.encode(query, records[size - 1].run_id)
        return response
