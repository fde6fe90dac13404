"""EvaluateModel: the out-of-time replay an operator reads, through the RPC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from services.cli.loader import load_feedback, load_reviews
from services.cli.synthetic import REGIMES, generate_history
from tests.conftest import RunningService, StartService, auth
from tests.integration.feedback.conftest import finding_input
from tests.integration.learning.test_learning_service import END, start_learning, wait_for_fold


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


async def test_evaluation_compares_the_model_with_both_baselines(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    history = generate_history(
        seed=41, reviews=500, findings_per_review=8, end=END, regime=REGIMES["repository_specific"]
    )
    ids = await load_reviews(feedback, history.reviews, metadata=auth("ingest"), request_prefix="e")
    await load_feedback(feedback, history.feedback, ids, metadata=auth("ingest"))
    await wait_for_fold(learning)
    response = await learning.EvaluateModel(
        learning_pb2.EvaluateModelRequest(holdout_fraction=0.25), metadata=auth("operator")
    )
    methods = {m.method: m for m in response.methods}
    assert set(methods) == {"learned", "raw_confidence", "rule_rate"}
    assert response.train_findings > 0
    assert response.test_findings > 0
    # A quarter of the reacted findings were first seen after the cut.
    total = response.train_findings + response.test_findings
    assert response.test_findings == pytest.approx(0.25 * total, rel=0.1)
    learned = methods["learned"]
    assert learned.auc > methods["raw_confidence"].auc
    assert learned.auc > methods["rule_rate"].auc
    assert learned.expected_calibration_error < 0.08
    assert learned.acted_on_hidden_share <= 0.10
    assert 0.0 <= learned.precision_at_k <= 1.0
    assert response.model.samples == response.train_findings
    # Scoped to one repository: fewer findings scored, the same ones learned from.
    repository = history.reviews[0].repository_url
    scoped = await learning.EvaluateModel(
        learning_pb2.EvaluateModelRequest(
            holdout_fraction=0.25,
            scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_REPOSITORY, id=repository),
        ),
        metadata=auth("operator"),
    )
    assert scoped.train_findings == response.train_findings
    assert 0 < scoped.test_findings < response.test_findings
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await learning.EvaluateModel(learning_pb2.EvaluateModelRequest(), metadata=auth("reader"))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_reaction_after_the_cut_does_not_leak_into_training(
    start_service: StartService, feedback_service: RunningService
) -> None:
    feedback = feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)
    learning = learning_pb2_grpc.LearningServiceStub((await start_learning(start_service)).channel)
    now = datetime.now(UTC).replace(microsecond=0)
    before, cut, after = now - timedelta(days=30), now - timedelta(days=20), now - timedelta(days=5)
    recorded = await feedback.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            repository_url="https://git.example.com/acme/api",
            team="platform",
            pull_request=1,
            head_commit="c",
            findings=[finding_input(i) for i in range(60)],
        ),
        metadata=auth("ingest"),
    )
    ids = [f.finding_id for f in recorded.findings]
    events = []
    for i, finding_id in enumerate(ids):
        # 0-19: dismissed before the cut, applied after it (acted on only after the cut).
        # 20-39: applied before the cut. 40-59: first seen after the cut (the test set).
        if i < 20:
            events += [(finding_id, "DISMISSED", before), (finding_id, "APPLIED", after)]
        elif i < 40:
            events.append((finding_id, "APPLIED", before))
        else:
            events.append((finding_id, "APPLIED" if i % 2 else "REJECTED", after))
    await feedback.BatchRecordFeedback(
        feedback_pb2.BatchRecordFeedbackRequest(
            events=[
                feedback_pb2.FeedbackEvent(
                    event_id=f"leak-{n}",
                    finding_id=finding_id,
                    kind=common_pb2.FeedbackKind.Value(f"FEEDBACK_KIND_{kind}"),
                    actor_id="dev",
                    occurred_at=stamp(when),
                )
                for n, (finding_id, kind, when) in enumerate(events)
            ]
        ),
        metadata=auth("ingest"),
    )
    await wait_for_fold(learning)
    response = await learning.EvaluateModel(
        learning_pb2.EvaluateModelRequest(cut_time=stamp(cut)), metadata=auth("operator")
    )
    assert response.train_findings == 40
    assert response.test_findings == 20
    # At the cut, findings 0-19 were dismissed: the later "applied" is not known to training.
    assert response.model.acted_on == 20
    assert response.test_acted_on == 10
