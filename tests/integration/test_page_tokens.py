"""Page tokens are signed and checked: forged, tampered or foreign tokens are INVALID_ARGUMENT
(reason INVALID_PAGE_TOKEN) in every service, never INTERNAL, and honest tokens keep working."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from shared.pagination import PageTokens
from tests.conftest import StartService, auth
from tests.integration.feedback.conftest import event, record_review
from tests.integration.test_runtime import error_info

KEY = "test-page-token-key-0123456789abcdef"


def unsigned(query: str, position: Any) -> str:
    """A token in the old, unsigned format (base64 of JSON): what a forger would write."""
    raw = json.dumps({"q": query, "p": position}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# The positions the black-box probe sent, in the queries the services used to accept.
FORGED_PATTERN_TOKENS = [
    unsigned("patterns:1::0", ["abc", "k"]),
    unsigned("patterns:1::0", [None, "k"]),
    '{"q": "patterns:1::0", "p": [1e400, "k"]}',
    base64.urlsafe_b64encode(b'{"q": "patterns:1::0", "p": [1e400, "k"]}').decode(),
    unsigned("patterns:1::0", [1, "k", 3]),
    unsigned("patterns:1::0", 5),
    "not a token at all",
    "x" * 20_000,
]
FORGED_METRIC_TOKENS = [
    unsigned("metrics:1::2:", 7),
    unsigned("metrics:1::2:", None),
    unsigned("metrics:1::2:", ["a"]),
]


async def assert_invalid_page_token(call: Awaitable[Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info(caught.value).reason == "INVALID_PAGE_TOKEN"


async def test_forged_feedback_page_tokens_are_invalid_argument(
    start_service: StartService,
) -> None:
    service = await start_service(build_feedback, FeedbackSettings, page_token_key=KEY)
    stub = feedback_pb2_grpc.FeedbackServiceStub(service.channel)
    finding_id = (await record_review(stub, findings=1)).findings[0].finding_id
    await stub.BatchRecordFeedback(
        feedback_pb2.BatchRecordFeedbackRequest(
            events=[event(f"page-{i}", finding_id) for i in range(3)]
        ),
        metadata=auth("ingest"),
    )
    query = f"f:{finding_id}"
    forged = [
        unsigned(query, True),
        unsigned(query, "12"),
        unsigned(query, 2**70),
        unsigned(query, 1.5),
        # A well-formed token of the right shape, but signed with another key.
        PageTokens("another-key").encode(query, 3),
    ]

    def list_feedback(token: str) -> Awaitable[Any]:
        return stub.ListFeedback(
            feedback_pb2.ListFeedbackRequest(finding_id=finding_id, page_token=token),
            metadata=auth("reader"),
        )

    for token in forged:
        await assert_invalid_page_token(list_feedback(token))
    # An honest token, tampered with by one character, is refused; untouched it pages on.
    first = await stub.ListFeedback(
        feedback_pb2.ListFeedbackRequest(finding_id=finding_id, page_size=2),
        metadata=auth("reader"),
    )
    token = first.next_page_token
    assert token
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    await assert_invalid_page_token(list_feedback(tampered))
    second = await list_feedback(token)
    assert len(first.feedback) + len(second.feedback) == 3
    # A token continues only the query that issued it.
    other = (await record_review(stub, findings=1, start=5)).findings[0].finding_id
    await assert_invalid_page_token(
        stub.ListFeedback(
            feedback_pb2.ListFeedbackRequest(finding_id=other, page_token=token),
            metadata=auth("reader"),
        )
    )


async def test_forged_learning_page_tokens_are_invalid_argument(
    start_service: StartService,
) -> None:
    service = await start_service(build_learning, LearningSettings, page_token_key=KEY)
    stub = learning_pb2_grpc.LearningServiceStub(service.channel)
    calls: list[tuple[Callable[[str], Awaitable[Any]], list[str]]] = [
        (
            lambda token: stub.ListPatterns(
                learning_pb2.ListPatternsRequest(page_token=token), metadata=auth("reader")
            ),
            FORGED_PATTERN_TOKENS,
        ),
        (
            lambda token: stub.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(page_token=token), metadata=auth("reader")
            ),
            FORGED_METRIC_TOKENS,
        ),
    ]
    for call, tokens in calls:
        for token in tokens:
            await assert_invalid_page_token(call(token))


def test_tokens_signed_with_the_key_are_still_checked_for_shape() -> None:
    """Even a token carrying a valid signature (a leaked key, a bug) cannot smuggle a position
    of the wrong type into a query."""
    pages = PageTokens(KEY)
    for position in ("abc", True, None, 2**63, 1.5):
        token = pages.encode("q", position)  # type: ignore[arg-type]
        with pytest.raises(Exception, match="malformed") as caught:
            pages.decode(token, "q", int)
        assert getattr(caught.value, "reason", "") == "INVALID_PAGE_TOKEN"
    for position in (["abc", "k"], [None, "k"], [float("inf"), "k"], [1, 2], [1], [1, "k", 2]):
        token = pages.encode("q", tuple(position))  # type: ignore[arg-type]
        with pytest.raises(Exception, match="malformed"):
            pages.decode(token, "q", (int, str))
    assert pages.decode(pages.encode("q", (3, "k")), "q", (int, str)) == (3, "k")
    assert pages.decode(pages.encode("q", "k"), "q", str) == "k"
    assert pages.decode("", "q", int) is None


def test_replicas_agree_on_the_key_and_it_is_never_the_same_for_other_secrets() -> None:
    configured = FeedbackSettings(tokens="reader=a", page_token_key=KEY).page_tokens()
    again = LearningSettings(tokens="reader=b", page_token_key=KEY).page_tokens()
    assert again.decode(configured.encode("q", 1), "q", int) == 1
    # Unset: derived from the bearer tokens, which every replica shares.
    derived = FeedbackSettings(tokens="reader=a").page_tokens()
    assert (
        LearningSettings(tokens="reader=a").page_tokens().decode(derived.encode("q", 1), "q", int)
        == 1
    )
    with pytest.raises(Exception, match="not a token"):
        FeedbackSettings(tokens="reader=b").page_tokens().decode(derived.encode("q", 1), "q", int)
    with pytest.raises(Exception, match="not a token"):
        configured.decode(derived.encode("q", 1), "q", int)
