"""What the gates do to the learning service: ranking passes through, feedback is still stored."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from tests.conftest import RunningService, StartService, auth
from tests.integration.control.conftest import (
    FAST,
    REPO,
    ControlStub,
    kill_switch,
    reason_of,
    set_gate,
    start_control,
)
from tests.integration.feedback.conftest import event, finding_input

OTHER = "https://git.example.com/acme/web"
WAIT = Duration(seconds=10)


async def start_learning(start_service: StartService, **overrides: object) -> RunningService:
    return await start_service(
        build_learning,
        LearningSettings,
        **{**FAST, "fold_poll_seconds": 0.2, "patterns_refresh_seconds": 3600, **overrides},
    )


async def rank(
    learning: learning_pb2_grpc.LearningServiceStub, repository_url: str = REPO
) -> learning_pb2.RankSuggestionsResponse:
    return await learning.RankSuggestions(
        learning_pb2.RankSuggestionsRequest(
            repository_url=repository_url,
            findings=[finding_input(i, confidence=0.1 * (i + 1)) for i in range(5)],
        ),
        metadata=auth("reader"),
    )


async def test_the_kill_switch_makes_ranking_pass_through_and_feedback_is_still_stored(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    feedback = feedback_pb2_grpc.FeedbackServiceStub(
        (await start_service(build_feedback, FeedbackSettings, **FAST)).channel
    )
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    recorded = await feedback.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url=REPO,
            team="platform",
            pull_request=3,
            head_commit="c1",
            findings=[finding_input(i) for i in range(3)],
        ),
        metadata=auth("ingest"),
    )
    assert (await rank(learning)).learning_applied

    engaged = await kill_switch(control, True, "incident 42", wait_for_replicas=WAIT)
    assert engaged.propagation.converged
    passed = await rank(learning)
    assert not passed.learning_applied
    assert passed.not_applied_reason.startswith("kill_switch:")
    assert "incident 42" in passed.not_applied_reason
    assert [item.ref.index for item in passed.findings] == list(range(5))
    assert not any(item.suppressed for item in passed.findings)

    # Feedback is recorded while learning is off: a gate never drops data.
    for i, finding in enumerate(recorded.findings):
        answer = await feedback.RecordFeedback(
            feedback_pb2.RecordFeedbackRequest(event=event(f"during-kill-{i}", finding.finding_id)),
            metadata=auth("ingest"),
        )
        assert not answer.duplicate
    async with db_engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM suggestion_feedback WHERE event_id LIKE 'during-kill-%'")
        )
    assert stored == 3

    released = await kill_switch(control, False, "resolved", wait_for_replicas=WAIT)
    assert released.propagation.converged
    assert (await rank(learning)).learning_applied


async def test_the_environment_hard_kill_beats_a_released_switch(
    start_service: StartService,
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    learning = learning_pb2_grpc.LearningServiceStub(
        (await start_learning(start_service, learning_enabled=False)).channel
    )
    await kill_switch(control, True, "drill", wait_for_replicas=WAIT)
    await kill_switch(control, False, "drill over", wait_for_replicas=WAIT)
    await set_gate(
        control,
        common_pb2.FEATURE_RANKING,
        True,
        REPO,
        reason="force on",
        wait_for_replicas=WAIT,
    )
    response = await rank(learning)
    assert not response.learning_applied
    assert "LEARNING_ENABLED=false" in response.not_applied_reason
    assert response.not_applied_reason.startswith("environment:")


async def test_a_repository_override_beats_the_global_ranking_gate(
    start_service: StartService,
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    await set_gate(control, common_pb2.FEATURE_RANKING, False, reason="off for now")
    await set_gate(
        control, common_pb2.FEATURE_RANKING, True, REPO, reason="beta", wait_for_replicas=WAIT
    )
    assert (await rank(learning, REPO)).learning_applied
    other = await rank(learning, OTHER)
    assert not other.learning_applied
    assert other.not_applied_reason.startswith("global_gate: ranking is off")


async def test_under_the_kill_switch_a_tune_is_refused_and_a_dry_run_still_answers(
    start_service: StartService,
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    operator = auth("operator")
    await kill_switch(control, True, "incident 7", wait_for_replicas=WAIT)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await learning.TuneConfidenceThresholds(
            learning_pb2.TuneConfidenceThresholdsRequest(reason="weekly"), metadata=operator
        )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(refused.value) == "FEATURE_DISABLED"
    assert "incident 7" in (refused.value.details() or "")
    dry = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(dry_run=True, reason="what if"),
        metadata=operator,
    )
    assert not dry.applied
    await kill_switch(control, False, "over", wait_for_replicas=WAIT)
    applied = await learning.TuneConfidenceThresholds(
        learning_pb2.TuneConfidenceThresholdsRequest(reason="weekly"), metadata=operator
    )
    assert applied.applied
