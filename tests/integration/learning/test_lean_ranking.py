"""RankOptions.explain=false: the lean answer is the full answer without the explanations."""

from __future__ import annotations

from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from tests.conftest import StartService, auth
from tests.integration.learning.test_learning_service import start_learning


def _findings(count: int) -> list[common_pb2.FindingInput]:
    return [
        common_pb2.FindingInput(
            client_finding_id=f"c{i}",
            rule_id=f"rule-{i % 7}",
            category=("style", "security", "performance")[i % 3],
            severity=(common_pb2.SEVERITY_LOW, common_pb2.SEVERITY_CRITICAL)[i % 2],
            confidence=(i % 10) / 10,
            file_path=f"src/module_{i % 5}.py" if i % 4 else f"tests/test_{i}.py",
            line_start=10 + i,
            message=f"message {i % 40}",
            code_context=f"x = {i % 40}",
        )
        for i in range(count)
    ]


async def test_the_lean_answer_is_the_full_one_without_explanations(
    start_service: StartService,
) -> None:
    service = await start_learning(start_service)
    stub = learning_pb2_grpc.LearningServiceStub(service.channel)
    request = learning_pb2.RankSuggestionsRequest(
        repository_url="https://git.example.com/a/b",
        findings=_findings(300),
        options=learning_pb2.RankOptions(max_results=10),
    )
    full = await stub.RankSuggestions(request, metadata=auth("reader"))
    request.options.explain = False
    lean = await stub.RankSuggestions(request, metadata=auth("reader"))
    request.options.explain = True
    explained = await stub.RankSuggestions(request, metadata=auth("reader"))

    assert full.learning_applied
    assert explained == full  # explain=true is what an unset option means
    assert all(item.HasField("explanation") for item in full.findings)
    assert all(item.explanation.terms for item in full.findings)
    shown = [item for item in full.findings if not item.suppressed]
    assert all(item.explanation.summary.startswith("P(acted on) ") for item in shown)
    assert {item.suppression_reason for item in full.findings} >= {
        learning_pb2.SUPPRESSION_REASON_DUPLICATE,
        learning_pb2.SUPPRESSION_REASON_OVER_LIMIT,
    }

    assert not any(item.HasField("explanation") for item in lean.findings)
    stripped = learning_pb2.RankSuggestionsResponse()
    stripped.CopyFrom(full)
    for item in stripped.findings:
        item.ClearField("explanation")
    assert lean == stripped
    assert lean.ByteSize() < full.ByteSize()
