"""The phased rollout: criteria from recorded measurements, moves, membership, sticky exposure."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from reviewlearn.control.v1 import control_pb2
from reviewlearn.learning.v1 import learning_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.domain.model import LogOddsModel, uninformed_model
from services.learning.domain.model_fitting import fit_model
from services.learning.storage.model_repository import ModelRepository
from shared.db.engine import create_session_factory
from shared.gates.model import rollout_bucket
from tests.conftest import StartService, auth
from tests.integration.control.conftest import (
    ControlStub,
    control_behind_proxy,
    eventually,
    reason_of,
    start_control,
    violations,
)
from tests.integration.control.test_learning_gates import rank, start_learning
from tests.unit.learning.logs import NOW, two_rule_log

URLS = [f"https://git.example.com/org{i % 97}/repo-{i}" for i in range(10_000)]
SALT = "reviewlearn"  # ControlSettings.rollout_salt's default


async def advance(
    stub: ControlStub, reason: str = "criteria reviewed", **fields: object
) -> control_pb2.AdvanceRolloutResponse:
    return await stub.AdvanceRollout(
        control_pb2.AdvanceRolloutRequest(reason=reason, **fields),  # type: ignore[arg-type]
        metadata=auth("operator"),
    )


async def rollback(
    stub: ControlStub, to_phase: int, reason: str = "error rate", **fields: object
) -> control_pb2.RollbackRolloutResponse:
    return await stub.RollbackRollout(
        control_pb2.RollbackRolloutRequest(to_phase=to_phase, reason=reason, **fields),  # type: ignore[arg-type]
        metadata=auth("operator"),
    )


async def criteria(stub: ControlStub) -> dict[str, control_pb2.SuccessCriterion]:
    response = await stub.EvaluateRolloutCriteria(
        control_pb2.EvaluateRolloutCriteriaRequest(), metadata=auth("reader")
    )
    return {c.name: c for c in response.criteria}


async def rollout_repos(stub: ControlStub, **fields: object) -> list[str]:
    urls: list[str] = []
    token = ""
    while True:
        page = await stub.ListRolloutRepos(
            control_pb2.ListRolloutReposRequest(page_size=1000, page_token=token, **fields),  # type: ignore[arg-type]
            metadata=auth("reader"),
        )
        urls.extend(page.repository_urls)
        token = page.next_page_token
        if not token:
            return urls


async def add_repositories(db_engine: AsyncEngine, urls: list[str]) -> None:
    """Known repositories, as the feedback service would have recorded them."""
    async with db_engine.begin() as connection:
        team = await connection.scalar(
            text("INSERT INTO teams (name) VALUES ('platform') RETURNING id")
        )
        await connection.execute(
            text(
                "INSERT INTO repositories (url, team_id) "
                "SELECT u, :team FROM unnest(CAST(:urls AS text[])) u"
            ),
            {"team": team, "urls": urls},
        )


async def record_job_runs(db_engine: AsyncEngine, *runs: tuple[str, int]) -> None:
    """Job runs as the learning service's batch jobs record them (2 succeeded, 3 failed)."""
    async with db_engine.begin() as connection:
        for name, status in runs:
            await connection.execute(
                text(
                    "INSERT INTO job_runs (job_name, frequency, status, finished_at) "
                    "VALUES (:name, 1, :status, now())"
                ),
                {"name": name, "status": status},
            )


async def test_until_a_rollout_starts_every_repository_is_in(stub: ControlStub) -> None:
    rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
    assert not rollout.in_force
    assert rollout.current.phase == 0
    member = await stub.IsRepoInRollout(
        control_pb2.IsRepoInRolloutRequest(repository_url=URLS[0]), metadata=auth("reader")
    )
    assert (member.in_rollout, member.reason) == (True, "no_rollout")
    assert member.bucket == rollout_bucket(SALT, URLS[0]) / 100
    # What phase 1 would select, before it starts.
    at_10 = await stub.IsRepoInRollout(
        control_pb2.IsRepoInRolloutRequest(repository_url=URLS[0], phase=1),
        metadata=auth("reader"),
    )
    assert at_10.in_rollout == (rollout_bucket(SALT, URLS[0]) < 1000)


async def test_advance_is_refused_while_a_criterion_fails_unless_forced(
    start_service: StartService, database_url: str, db_engine: AsyncEngine
) -> None:
    stub = ControlStub((await start_control(start_service)).channel)
    # A replica whose database goes away answers UNAVAILABLE: real server-side errors, which
    # its heartbeat records once the database is back.
    async with control_behind_proxy(database_url, heartbeat_sample_seconds=0.2) as flaky:
        request = control_pb2.GetFeatureGatesRequest()
        await flaky.stub.GetFeatureGates(request, metadata=auth("reader"))
        await flaky.proxy.cut()
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await flaky.stub.GetFeatureGates(request, metadata=auth("reader"))
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        await flaky.proxy.restore()

        async def errors_recorded() -> bool:
            found = (await criteria(stub))["error_rate"]
            return found.measured and found.observed > 0.1

        await eventually(errors_recorded, within=20, what="the errors reaching the samples")

    judged = await criteria(stub)
    assert not judged["error_rate"].met
    assert judged["error_rate"].blocking
    assert not judged["learning_update_success"].measured  # no job runs recorded
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await advance(stub)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "ROLLOUT_CRITERIA_NOT_MET"
    assert "error_rate" in (caught.value.details() or "")
    rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
    assert not rollout.in_force

    forced = await advance(stub, "accepted: errors came from a drill", force=True)
    assert (forced.current.phase, forced.current.percentage, forced.current.forced) == (1, 10, True)
    assert {c.name for c in forced.criteria if c.blocking and not c.met} >= {"error_rate"}
    async with db_engine.connect() as connection:
        audit = (
            await connection.execute(
                text(
                    "SELECT actor, after, reason FROM audit_events WHERE action = 'rollout.advance'"
                )
            )
        ).one()
    assert audit.actor.startswith("operator:")
    assert audit.after["forced"] is True
    assert "error_rate" in audit.after["failing"]
    assert audit.reason == "accepted: errors came from a drill"


async def test_advance_succeeds_when_every_criterion_holds(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    stub = ControlStub((await start_control(start_service, heartbeat_sample_seconds=0.2)).channel)
    await record_job_runs(
        db_engine,
        ("update_learning_metrics", 2),
        ("tune_thresholds", 2),
        ("validate_data_integrity", 2),
    )
    for _ in range(20):
        await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=auth("reader"))

    async def all_blocking_met() -> bool:
        return all(c.met for c in (await criteria(stub)).values() if c.blocking)

    await eventually(all_blocking_met, within=20, what="the criteria holding")
    moved = await advance(stub, "phase 0 criteria met", issues_found=["none"])
    assert (moved.current.phase, moved.current.forced) == (1, False)
    rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
    assert rollout.in_force
    assert [h.phase for h in rollout.history] == [1]
    assert {c.name for c in rollout.current.success_metrics} >= {"error_rate", "latency_p95_ms"}

    # Phase 1 failing its own learning-update criterion now: a failed job run.
    await record_job_runs(db_engine, *[("update_learning_metrics", 3)] * 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await advance(stub)
    assert "learning_update_success" in (caught.value.details() or "")


async def test_the_offline_evaluation_is_the_serving_models_out_of_time_validation(
    stub: ControlStub, db_engine: AsyncEngine
) -> None:
    before = (await criteria(stub))["offline_evaluation_auc"]
    assert (before.measured, before.blocking) == (False, False)

    sessions = create_session_factory(db_engine)

    async def serve(model: LogOddsModel) -> control_pb2.SuccessCriterion:
        """Stores ``model`` as the active one, as the learning service stores a fit."""
        async with sessions.begin() as session:
            await ModelRepository(session).save_model(
                version=model.version,
                document=model.to_document(),
                samples=model.samples,
                fitted_by="fit_model",
                reason="test",
                keep=5,
            )
        return (await criteria(stub))["offline_evaluation_auc"]

    # A model the fit validated on the findings after its cut.
    fitted = fit_model(two_rule_log(), version="fit-1", fitted_at=NOW)
    assert fitted.validation is not None
    judged = await serve(fitted)
    assert judged.measured
    assert judged.met
    assert judged.observed == pytest.approx(fitted.validation.auc)
    assert f"model fit-1 on {fitted.validation.samples} findings" in judged.detail
    # Only the serving model counts: one fitted on nothing replaces it and has no validation.
    judged = await serve(uninformed_model(version="fit-2", fitted_at=NOW, prior_variance=1.0))
    assert not judged.measured


async def test_rollout_membership_is_monotone_sticky_and_honoured_by_ranking(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    stub = ControlStub((await start_control(start_service)).channel)
    learning_service = await start_learning(start_service)
    learning = learning_pb2_grpc.LearningServiceStub(learning_service.channel)
    await add_repositories(db_engine, URLS)

    previous: set[str] = set()
    exposed: list[str] = []
    for phase, percentage in ((1, 10), (2, 25), (3, 50)):
        await advance(stub, f"to phase {phase}", force=True)
        members = set(await rollout_repos(stub))
        expected = {u for u in URLS if rollout_bucket(SALT, u) < percentage * 100}
        assert members == expected, f"SQL and Python disagree at phase {phase}"
        assert previous <= members
        previous = members
        rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
        assert (rollout.repositories_in_rollout, rollout.repositories_total) == (
            len(expected),
            len(URLS),
        )
    # Ranking at 50% exposes repositories in buckets 1000-4999; the ledger keeps them.
    newcomers = sorted(u for u in previous if rollout_bucket(SALT, u) >= 1000)[:12]
    await _wait_until_applied(learning_service, phase=3)
    for url in newcomers:
        assert (await rank(learning, url)).learning_applied
        exposed.append(url)

    async def ledgered() -> bool:
        rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
        return rollout.repositories_ever_exposed >= len(exposed)

    await eventually(ledgered, what="the exposures reaching the ledger")

    await rollback(stub, 1, "regression in phase 3", sticky_exposure=True)
    sticky = set(await rollout_repos(stub))
    at_10 = {u for u in URLS if rollout_bucket(SALT, u) < 1000}
    assert sticky == at_10 | set(exposed)
    await _wait_until_applied(learning_service, phase=1)
    for url in exposed:
        assert (await rank(learning, url)).learning_applied
    left_out = next(u for u in sorted(previous - sticky))
    passed = await rank(learning, left_out)
    assert not passed.learning_applied
    assert passed.not_applied_reason.startswith("not_in_rollout:")
    member = await stub.IsRepoInRollout(
        control_pb2.IsRepoInRolloutRequest(repository_url=exposed[0]), metadata=auth("reader")
    )
    assert (member.in_rollout, member.ever_exposed, member.reason) == (
        True,
        True,
        "sticky_exposure",
    )

    # Without sticky exposure a rollback takes them out.
    await rollback(stub, 0, "stop everything new", sticky_exposure=False)
    assert await rollout_repos(stub) == []
    await _wait_until_applied(learning_service, phase=0)
    assert not (await rank(learning, exposed[0])).learning_applied


async def _wait_until_applied(service: object, *, phase: int) -> None:
    gates = service.runtime.gates  # type: ignore[attr-defined]

    async def applied() -> bool:
        snapshot = gates.snapshot
        return snapshot is not None and snapshot.rollout.phase == phase

    await eventually(applied, what=f"the learning replica applying phase {phase}")


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (control_pb2.RollbackRolloutRequest(to_phase=5, reason="x"), "to_phase"),
        (control_pb2.RollbackRolloutRequest(to_phase=-1, reason="x"), "to_phase"),
        (control_pb2.RollbackRolloutRequest(to_phase=0, reason=""), "reason"),
        (control_pb2.AdvanceRolloutRequest(reason=""), "reason"),
        (control_pb2.IsRepoInRolloutRequest(repository_url="r", percentage=101), "percentage"),
        (control_pb2.IsRepoInRolloutRequest(repository_url="r", phase=7), "phase"),
        (control_pb2.IsRepoInRolloutRequest(repository_url=""), "repository_url"),
        (control_pb2.ListRolloutReposRequest(percentage=-5), "percentage"),
        (control_pb2.EvaluateRolloutCriteriaRequest(phase=9), "phase"),
    ],
)
async def test_bad_rollout_input_is_invalid_argument(
    stub: ControlStub, request_message: object, field: str
) -> None:
    method = {
        control_pb2.RollbackRolloutRequest: (stub.RollbackRollout, "operator"),
        control_pb2.AdvanceRolloutRequest: (stub.AdvanceRollout, "operator"),
        control_pb2.IsRepoInRolloutRequest: (stub.IsRepoInRollout, "reader"),
        control_pb2.ListRolloutReposRequest: (stub.ListRolloutRepos, "reader"),
        control_pb2.EvaluateRolloutCriteriaRequest: (stub.EvaluateRolloutCriteria, "reader"),
    }[type(request_message)]  # type: ignore[index]
    call, role = method
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_message, metadata=auth(role))  # type: ignore[operator]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)


async def test_rollback_must_go_backwards(stub: ControlStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rollback(stub, 0)
    assert reason_of(caught.value) == "ROLLOUT_NOT_STARTED"
    await advance(stub, force=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rollback(stub, 2)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "ROLLBACK_NOT_BACKWARDS"
    for _ in range(3):
        await advance(stub, force=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await advance(stub, force=True)
    assert reason_of(caught.value) == "ROLLOUT_COMPLETE"
    retried = await asyncio.gather(
        *(rollback(stub, 2, "retry", request_id="rb-1") for _ in range(3))
    )
    assert {r.current.phase for r in retried} == {2}
    rollout = await stub.GetRollout(control_pb2.GetRolloutRequest(), metadata=auth("reader"))
    assert [h.phase for h in rollout.history] == [1, 2, 3, 4, 2]
