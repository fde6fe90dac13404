"""kill -9 of each service under load, and the control plane down: nothing acknowledged is lost
or doubled, learning converges (fold = recompute), the others keep their gate snapshot."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2
from reviewlearn.insights.v1 import insights_pb2
from reviewlearn.learning.v1 import learning_pb2

from services.cli.supervisor import SERVICES
from tests.conftest import auth
from tests.faults.conftest import (
    RPC_TIMEOUT,
    FeedbackLoad,
    Figure,
    Readers,
    Stubs,
    account,
    folded,
    record_findings,
    report,
    retried,
    until,
)
from tests.integration.feedback.conftest import event, finding_input
from tests.system import System, fold_equals_recompute

pytestmark = pytest.mark.faults

FINDINGS = 1000
ACKS_AROUND_FAULT = 100


async def _team_positive(stubs: Stubs, team: str, errors: Counter[str]) -> int:
    # Retried: a client channel that saw the service down stays in reconnect backoff for a
    # while after it is back, failing fast with UNAVAILABLE (gRPC's client behaviour).
    await retried(
        lambda: stubs.insights.RefreshInsights(
            insights_pb2.RefreshInsightsRequest(request_id=uuid.uuid4().hex, parts=["rollups"]),
            metadata=auth("operator"),
            timeout=RPC_TIMEOUT,
        ),
        errors,
    )
    response = await retried(
        lambda: stubs.insights.GetTeamMetrics(
            insights_pb2.GetTeamMetricsRequest(
                scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team)
            ),
            metadata=auth("reader"),
            timeout=RPC_TIMEOUT,
        ),
        errors,
    )
    return int(response.metrics.positive)  # type: ignore[attr-defined]


@pytest.mark.parametrize("victim", SERVICES)
async def test_kill_9_under_load_loses_and_doubles_nothing(
    victim: str, system: System, stubs: Stubs
) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository, team = f"https://git.example.com/kill-{victim}-{suffix}/api", f"kill-{suffix}"
    figure = Figure(f"kill -9 {victim} under load")
    ids = await record_findings(stubs, repository, team, FINDINGS, figure.errors)
    load = FeedbackLoad(stubs, f"kill-{victim}-{suffix}", ids)
    readers = Readers(stubs, repository, team)
    running = [asyncio.ensure_future(load.run()), asyncio.ensure_future(readers.run())]
    await until(lambda: len(load.acknowledged) >= ACKS_AROUND_FAULT)
    pid = system.services[victim].pid
    killed_at = time.monotonic()
    system.kill(victim)
    await asyncio.sleep(0.5)  # the clients keep calling a dead service
    system.spawn(victim)
    await asyncio.to_thread(system.wait_serving, victim)
    assert system.services[victim].pid != pid
    back = len(load.acknowledged)
    await until(lambda: len(load.acknowledged) >= min(len(ids), back + ACKS_AROUND_FAULT))
    figure.recover_seconds = time.monotonic() - killed_at
    load.stop.set()
    readers.stop.set()
    await asyncio.gather(*running)

    acknowledged = set(load.acknowledged)
    stored = await account(figure, system, repository, sent=load.sent, acknowledged=acknowledged)
    figure.errors.update(load.errors)
    figure.errors.update(readers.errors)
    metric = await folded(stubs, repository, len(acknowledged))
    checked = fold_equals_recompute(system)
    figure.note = (
        f"{readers.answered} reads answered; learning positive {metric.positive}/"
        f"{len(load.applied)}; fold = recompute: {checked.returncode == 0}; "
        "recover = kill to SERVING again (0.5 s of it left dead on purpose)"
    )
    report(figure)

    assert load.item_errors == {}
    assert figure.lost == 0
    assert figure.doubled == 0
    assert stored <= load.sent  # nothing stored that no client sent
    assert acknowledged == load.sent  # every client got its batch acknowledged in the end
    assert "INTERNAL" not in figure.errors
    assert set(figure.errors) <= {"UNAVAILABLE"}, figure.errors
    assert (metric.positive, metric.negative) == (
        len(load.applied),
        len(acknowledged) - len(load.applied),
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert await _team_positive(stubs, team, Counter()) == len(load.applied)


async def test_control_down_the_others_keep_their_gate_snapshot_and_serve(
    system: System, stubs: Stubs
) -> None:
    suffix = uuid.uuid4().hex[:8]
    gated = f"https://git.example.com/gated-{suffix}/api"
    free = f"https://git.example.com/free-{suffix}/api"
    team = f"control-{suffix}"
    figure = Figure("control service down (kill -9, 5 s)")
    ids = await record_findings(stubs, gated, team, 100, figure.errors)
    async with grpc.aio.insecure_channel(system.address("control")) as channel:
        control: control_pb2_grpc.ControlServiceAsyncStub = control_pb2_grpc.ControlServiceStub(
            channel
        )
        changed = await control.SetFeatureGate(
            control_pb2.SetFeatureGateRequest(
                feature=common_pb2.FEATURE_RANKING,
                repository_url=gated,
                enabled=False,
                reason="fault suite",
                wait_for_replicas=Duration(seconds=20),
            ),
            metadata=auth("operator"),
        )
        assert changed.propagation.converged

    system.kill("control")
    findings = [finding_input(i) for i in range(5)]
    wrong: list[str] = []
    sent: set[str] = set()
    acknowledged: set[str] = set()
    answered = 0
    deadline = time.monotonic() + 5
    step = 0
    while time.monotonic() < deadline:
        try:
            for repository, expected in ((gated, False), (free, True)):
                ranked = await stubs.learning.RankSuggestions(
                    learning_pb2.RankSuggestionsRequest(
                        repository_url=repository, findings=findings
                    ),
                    metadata=auth("reader"),
                    timeout=RPC_TIMEOUT,
                )
                if ranked.learning_applied is not expected:
                    wrong.append(f"{repository}: {ranked.not_applied_reason}")
            reaction = event(f"ctl-{suffix}-{step}", ids[step % len(ids)])
            sent.add(reaction.event_id)
            await stubs.feedback.RecordFeedback(
                feedback_pb2.RecordFeedbackRequest(event=reaction),
                metadata=auth("ingest"),
                timeout=RPC_TIMEOUT,
            )
            acknowledged.add(reaction.event_id)
            await stubs.insights.GetTeamMetrics(
                insights_pb2.GetTeamMetricsRequest(
                    scope=common_pb2.Scope(type=common_pb2.SCOPE_TYPE_TEAM, id=team)
                ),
                metadata=auth("reader"),
                timeout=RPC_TIMEOUT,
            )
            answered += 4
        except grpc.aio.AioRpcError as exc:
            figure.errors[exc.code().name] += 1
        step += 1
        await asyncio.sleep(0.05)
    restarted = time.monotonic()
    system.spawn("control")
    await asyncio.to_thread(system.wait_serving, "control")
    figure.recover_seconds = time.monotonic() - restarted
    async with grpc.aio.insecure_channel(system.address("control")) as channel:
        control = control_pb2_grpc.ControlServiceStub(channel)
        await control.ClearFeatureGate(
            control_pb2.ClearFeatureGateRequest(
                feature=common_pb2.FEATURE_RANKING, repository_url=gated, reason="fault over"
            ),
            metadata=auth("operator"),
        )
    await account(figure, system, gated, sent=sent, acknowledged=acknowledged)
    figure.note = (
        f"{answered} answers while control was down, {len(wrong)} against the gate snapshot; "
        "recover = control restart to SERVING"
    )
    report(figure)

    assert wrong == []
    assert figure.errors == {}
    assert answered > 0
    assert figure.lost == figure.doubled == 0
