"""A PostgreSQL that restarts, shuts down, refuses connections or kills sessions: the services
answer UNAVAILABLE (never INTERNAL), safe writes retry, and health follows the database back.

The failures are genuine: a second cluster (``ScratchCluster``) stopped and started by the test,
a role whose connection limit is reached (53300), ``pg_terminate_backend`` (57P01).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.feedback.server import build_server as build_feedback
from services.feedback.settings import FeedbackSettings
from shared.db import migrate
from shared.db.failures import is_retryable, is_unavailable, write_retries
from shared.rpc.runtime import ServiceRuntime
from tests.conftest import TOKENS_ENV, StartService, auth
from tests.integration.feedback.conftest import event, record_review
from tests.integration.scratch_cluster import ScratchCluster
from tests.integration.test_runtime import error_info


@pytest.fixture(scope="module")
def scratch() -> Iterator[ScratchCluster]:
    try:
        cluster = ScratchCluster()
        cluster.start()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot run a second PostgreSQL cluster here: {exc}")
    asyncio.run(migrate.upgrade(cluster.url))
    yield cluster
    cluster.destroy()


@pytest.fixture
async def scratch_engine(scratch: ScratchCluster) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(scratch.url, pool_size=2, max_overflow=0)
    yield engine
    await engine.dispose()


async def _start(engine: AsyncEngine) -> ServiceRuntime:
    # An hour between health checks: the test decides when health is evaluated.
    runtime = build_feedback(
        FeedbackSettings(tokens=TOKENS_ENV, grpc_port=0, metrics_port=0, health_check_seconds=3600),
        engine=engine,
    )
    await runtime.start()
    return runtime


async def _health(runtime: ServiceRuntime) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="")
        )
    return int(response.status)


async def _get_finding_error(runtime: ServiceRuntime) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetFinding(
                feedback_pb2.GetFindingRequest(finding_id=1), metadata=auth("reader")
            )
    return caught.value


async def test_connecting_while_postgresql_shuts_down_is_unavailable(
    scratch: ScratchCluster, scratch_engine: AsyncEngine
) -> None:
    runtime = await _start(scratch_engine)
    holder = create_async_engine(scratch.url)
    try:
        async with holder.connect() as session:
            await session.execute(text("SELECT 1"))
            # A smart shutdown waits for this session, refusing new connections meanwhile.
            scratch.stop("smart", wait=False)
            await scratch_engine.dispose()  # the service's next call must connect anew
            error = await _get_finding_error(runtime)
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
            assert error_info(error).reason == "DATABASE_UNAVAILABLE"

            probe = create_async_engine(scratch.url)
            with pytest.raises(DBAPIError, match="shutting down") as refused:
                async with probe.connect():
                    pass
            await probe.dispose()
            assert is_unavailable(refused.value)
            assert is_retryable(refused.value)
    finally:
        await holder.dispose()
        await runtime.stop(grace=0)
        await asyncio.to_thread(scratch.stop)  # waits until the smart shutdown has finished
        await asyncio.to_thread(scratch.start)


async def test_a_refused_connection_is_retried_by_safe_writes(scratch: ScratchCluster) -> None:
    """The write retry policy reruns a transaction that met 57P03 and then succeeds."""
    holder = create_async_engine(scratch.url)
    engine = create_async_engine(scratch.url)
    attempts = 0
    try:
        async with holder.connect() as session:
            await session.execute(text("SELECT 1"))
            scratch.stop("smart", wait=False)
            async for attempt in write_retries():
                with attempt:
                    attempts += 1
                    if attempts == 2:  # the server is back before the second attempt
                        await session.close()
                        await asyncio.to_thread(scratch.stop)
                        await asyncio.to_thread(scratch.start)
                    async with engine.begin() as connection:
                        await connection.execute(text("SELECT 1"))
    finally:
        await holder.dispose()
        await engine.dispose()
    assert attempts == 2  # 57P03, then through once the server was back


async def test_too_many_connections_is_unavailable(
    database_url: str, start_service: StartService
) -> None:
    role = f"rl_limited_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
    limited = create_async_engine(make_url(database_url).set(username=role))
    runtime = build_feedback(
        FeedbackSettings(tokens=TOKENS_ENV, grpc_port=0, metrics_port=0), engine=limited
    )
    await runtime.start()
    try:
        error = await _get_finding_error(runtime)
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
        assert error_info(error).reason == "DATABASE_UNAVAILABLE"
    finally:
        await runtime.stop(grace=0)
        await limited.dispose()
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP ROLE {role}"))
        await admin.dispose()


async def test_writes_survive_terminated_backends(
    start_service: StartService, database_url: str
) -> None:
    """pg_terminate_backend (57P01) on every pooled connection: the next write retries and
    stores; the client sees neither an error nor a lost event."""
    service = await start_service(build_feedback, FeedbackSettings)
    stub = feedback_pb2_grpc.FeedbackServiceStub(service.channel)
    review = await record_review(stub, findings=2)
    finding_ids = [f.finding_id for f in review.findings]
    # The terminating session comes from its own unpooled engine: one from the service's pool
    # could itself have been terminated in the round before.
    admin = create_async_engine(database_url, poolclass=NullPool)
    for round_ in range(3):
        async with admin.connect() as connection:
            terminated = (
                await connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).scalar_one()
        assert terminated >= 0
        response = await stub.BatchRecordFeedback(
            feedback_pb2.BatchRecordFeedbackRequest(
                events=[
                    event(f"e-{round_}-{i}", finding_id) for i, finding_id in enumerate(finding_ids)
                ]
            ),
            metadata=auth("ingest"),
        )
        assert response.stored_count == 2
    await admin.dispose()


async def test_health_follows_the_database_down_and_straight_back(
    scratch: ScratchCluster, scratch_engine: AsyncEngine
) -> None:
    runtime = await _start(scratch_engine)
    try:
        assert await _health(runtime) == health_pb2.HealthCheckResponse.SERVING
        # A restart between two checks: the pool still holds a connection to the old server.
        await asyncio.to_thread(scratch.restart)
        await runtime.refresh_health()
        assert await _health(runtime) == health_pb2.HealthCheckResponse.SERVING
        assert (await runtime.health_report())["status"] == "healthy"

        await asyncio.to_thread(scratch.stop)
        await runtime.refresh_health()
        assert await _health(runtime) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.metrics_port}") as http:
            healthz = await http.get("/healthz")
        assert healthz.status_code == 503
        assert healthz.json()["components"]["database"] == "unhealthy"
        # Whoever can reach the side port learns that the database is down, not where it is.
        assert str(scratch.port) not in healthz.text
        assert "127.0.0.1" not in healthz.text

        await asyncio.to_thread(scratch.start)
        await runtime.refresh_health()  # the first check after the database is back
        assert await _health(runtime) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await runtime.stop(grace=0)
        if not scratch.running():
            await asyncio.to_thread(scratch.start)
