"""Fixtures of the feedback service tests: a running service and its stub."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from reviewlearn.common.v1 import common_pb2
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc

from services.feedback.server import build_server
from services.feedback.settings import FeedbackSettings
from tests.conftest import RunningService, StartService, auth


@pytest.fixture
async def feedback_service(start_service: StartService) -> RunningService:
    return await start_service(build_server, FeedbackSettings)


@pytest.fixture
def stub(feedback_service: RunningService) -> feedback_pb2_grpc.FeedbackServiceStub:
    return feedback_pb2_grpc.FeedbackServiceStub(feedback_service.channel)


def timestamp(moment: datetime | None = None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment or datetime.now(UTC) - timedelta(minutes=1))
    return stamp


def finding_input(index: int = 0, **overrides: object) -> common_pb2.FindingInput:
    values: dict[str, object] = {
        "client_finding_id": f"bot-{index}",
        "rule_id": f"rule-{index % 3}",
        "category": "security" if index % 2 else "style",
        "severity": common_pb2.SEVERITY_MEDIUM,
        "confidence": 0.5 + (index % 5) / 10,
        "file_path": f"src/module_{index % 4}.py",
        "line_start": 10 + index,
        "line_end": 12 + index,
        "title": f"Problem {index}",
        "message": f"Variable `x{index}` is assigned but never used",
        "code_context": f"x{index} = compute()",
    }
    values.update(overrides)
    return common_pb2.FindingInput(**values)  # type: ignore[arg-type]


async def record_review(
    stub: feedback_pb2_grpc.FeedbackServiceStub,
    *,
    findings: int = 3,
    repository: str = "https://git.example.com/acme/api",
    team: str = "platform",
    pull_request: int = 7,
    request_id: str = "",
    start: int = 0,
) -> feedback_pb2.RecordFindingsResponse:
    return await stub.RecordFindings(
        feedback_pb2.RecordFindingsRequest(
            request_id=request_id,
            repository_url=repository,
            team=team,
            pull_request=pull_request,
            head_commit="abc123",
            findings=[finding_input(start + i) for i in range(findings)],
        ),
        metadata=auth("ingest"),
    )


def event(
    event_id: str,
    finding_id: int,
    kind: int = common_pb2.FEEDBACK_KIND_APPLIED,
    *,
    occurred_at: datetime | None = None,
    comment: str = "",
) -> feedback_pb2.FeedbackEvent:
    return feedback_pb2.FeedbackEvent(
        event_id=event_id,
        finding_id=finding_id,
        kind=kind,  # type: ignore[arg-type]
        actor_id="dev-1",
        comment=comment,
        occurred_at=timestamp(occurred_at),
    )
