"""Batch jobs over real services: RunJobs on the learning service, its insights-owned jobs
against a real insights server, exactly once per slot, the lock, retries, partial runs, gates."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.propagate import inject
from prometheus_client.parser import text_string_to_metric_families
from reviewlearn.common.v1 import common_pb2
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learning.server import build_server as build_learning
from services.learning.settings import LearningSettings
from services.learning.storage.job_repository import LOCK_NAMESPACE, lock_key
from shared.telemetry import current_trace_id
from tests.conftest import RunningService, StartService, auth
from tests.integration.control.conftest import ControlStub, kill_switch, start_control
from tests.integration.insights.conftest import NOW, load, start_insights
from tests.integration.insights.history import GeneratedLog, generate

if TYPE_CHECKING:
    from reviewlearn.learning.v1.learning_pb2_grpc import LearningServiceAsyncStub as Stub
else:
    Stub = learning_pb2_grpc.LearningServiceStub

HOURLY = common_pb2.JOB_FREQUENCY_HOURLY
DAILY = common_pb2.JOB_FREQUENCY_DAILY
WEEKLY = common_pb2.JOB_FREQUENCY_WEEKLY
SUCCEEDED = learning_pb2.JOB_STATUS_SUCCEEDED
TICK = datetime(2026, 11, 30, 10, 5, tzinfo=UTC)  # a Monday: one slot of each family
FAST_RETRIES = {
    "job_retry_initial_seconds": 0.01,
    "job_retry_max_seconds": 0.02,
    "job_retry_jitter_seconds": 0.01,
}


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def start_learning(
    start_service: StartService, insights: RunningService | None, **overrides: Any
) -> Stub:
    values: dict[str, Any] = {
        **FAST_RETRIES,
        "fold_poll_seconds": 3600.0,
        "patterns_refresh_seconds": 3600.0,
        "gate_poll_seconds": 0.2,
        "insights_address": insights.address if insights else "127.0.0.1:1",
        "insights_timeout_seconds": 30.0,
    }
    values.update(overrides)
    service = await start_service(build_learning, LearningSettings, **values)
    return learning_pb2_grpc.LearningServiceStub(service.channel)


async def run_jobs(stub: Stub, **fields: Any) -> learning_pb2.RunJobsResponse:
    fields.setdefault("scheduled_time", at(TICK))
    return await stub.RunJobs(
        learning_pb2.RunJobsRequest(**fields), metadata=auth("operator"), timeout=120
    )


def by_name(response: learning_pb2.RunJobsResponse) -> dict[str, learning_pb2.JobRun]:
    return {run.job_name: run for run in response.runs}


def summary(run: learning_pb2.JobRun) -> dict[str, Any]:
    return MessageToDict(run.summary)


@pytest.fixture
async def generated(db_engine: AsyncEngine) -> GeneratedLog:
    log = generate(seed=11, teams=2, reviews=160, days=100, now=NOW)
    await load(db_engine, log)
    return log


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as connection:
        return await connection.scalar(text(sql))


async def test_every_job_changes_what_it_should_and_a_second_run_changes_nothing(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    insights = await start_insights(start_service)
    stub = await start_learning(start_service, insights)
    async with db_engine.begin() as connection:  # a trend point past the archive age
        await connection.execute(
            text(
                "INSERT INTO insights_trends (team_id, period, metric, category, value, samples) "
                "VALUES (1, :old, 3, '', 12, 12)"
            ),
            {"old": (NOW - timedelta(days=800)).date()},
        )

    hourly = by_name(await run_jobs(stub, frequency=HOURLY))
    assert list(hourly) == ["update_learning_metrics", "calculate_roi", "validate_data_integrity"]
    assert {r.status for r in hourly.values()} == {SUCCEEDED}, hourly
    # The service folds at start too; between the two every finding is in the counts.
    assert summary(hourly["update_learning_metrics"])["mismatches"] == 0
    assert await scalar(
        db_engine, "SELECT sum(shown) FROM learning_metrics WHERE scope_type = 1 AND dimension = 1"
    ) == len(generated.findings)
    assert await scalar(db_engine, "SELECT count(*) FROM learning_metrics") > 0
    assert await scalar(db_engine, "SELECT count(*) FROM roi_reports") == 2
    roi = hourly["calculate_roi"]
    assert sorted(roi.repositories_done) == sorted(generated.repositories)
    assert hourly["validate_data_integrity"].check_passed is True

    daily = by_name(await run_jobs(stub, frequency=DAILY))
    assert {r.status for r in daily.values()} == {SUCCEEDED}, daily
    assert await scalar(db_engine, "SELECT count(*) FROM learning_paths") > 0
    assert await scalar(db_engine, "SELECT count(*) FROM insights_trends") > 0
    assert await scalar(db_engine, "SELECT count(*) FROM insights_trends_archive") == 1
    # analyze_trends ran first and archived the old point; archive_old_trends found it done.
    assert summary(daily["analyze_trends"])["rows_archived"] == 1
    assert summary(daily["archive_old_trends"])["rows_archived"] == 0
    assert summary(daily["detect_anti_patterns"])["patterns_written"] > 0

    weekly = by_name(await run_jobs(stub, frequency=WEEKLY))
    assert {r.status for r in weekly.values()} == {SUCCEEDED}, weekly
    assert summary(weekly["update_confidence_thresholds"])["refitted"] is True
    assert await scalar(db_engine, "SELECT count(*) FROM learned_models") == 1
    assert await scalar(db_engine, "SELECT count(*) FROM team_metrics") == 2

    # The next slot of every family, with nothing new: every job runs and changes nothing.
    later = TICK + timedelta(days=7)
    again = {
        **by_name(await run_jobs(stub, frequency=HOURLY, scheduled_time=at(later))),
        **by_name(await run_jobs(stub, frequency=DAILY, scheduled_time=at(later))),
        **by_name(await run_jobs(stub, frequency=WEEKLY, scheduled_time=at(later))),
    }
    assert len(again) == 10
    assert {r.status for r in again.values()} == {SUCCEEDED}
    assert not any(r.already_ran for r in again.values())
    first = summary(again["update_learning_metrics"])
    assert (first["findings_folded"], first["events_folded"], first["mismatches"]) == (0, 0, 0)
    for name in (
        "calculate_roi",
        "generate_learning_paths",
        "analyze_trends",
        "archive_old_trends",
        "generate_insights_report",
    ):
        changed = summary(again[name])
        assert (changed["rows_written"], changed["rows_archived"]) == (0, 0), (name, changed)
    assert summary(again["detect_anti_patterns"])["patterns_written"] == 0
    assert summary(again["update_confidence_thresholds"])["refitted"] is False
    assert await scalar(db_engine, "SELECT count(*) FROM learned_models") == 1
    cleanup = summary(again["cleanup_orphaned_records"])
    assert all(value == 0 for value in cleanup.values()), cleanup
    assert await scalar(db_engine, "SELECT count(*) FROM job_runs") == 20


async def test_a_failed_integrity_check_is_recorded_for_alerts_and_cleanup_repairs_it(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None)
    integrity = ["validate_data_integrity"]
    ok = (await run_jobs(stub, job_names=integrity)).runs[0]
    assert (ok.status, ok.check_passed) == (SUCCEEDED, True)
    async with db_engine.begin() as connection:  # deleted by hand: its outcome is orphaned
        await connection.execute(text("DELETE FROM suggestion_feedback WHERE finding_id = 1"))
        await connection.execute(text("DELETE FROM findings WHERE id = 1"))

    later = at(TICK + timedelta(hours=1))
    broken = (await run_jobs(stub, job_names=integrity, scheduled_time=later)).runs[0]
    assert broken.status == learning_pb2.JOB_STATUS_FAILED
    assert broken.check_passed is False
    assert broken.attempts == 1  # a check that finds a problem is not retried
    assert "orphaned_outcomes" in broken.error
    async with db_engine.connect() as connection:  # what an alerting rule reads
        row = (
            await connection.execute(
                text(
                    "SELECT status, check_passed, summary->'failed_checks' FROM job_runs "
                    "WHERE job_name = 'validate_data_integrity' ORDER BY scheduled_for DESC LIMIT 1"
                )
            )
        ).one()
    assert row[0] == learning_pb2.JOB_STATUS_FAILED
    assert row[1] is False
    assert "orphaned_outcomes" in row[2]

    cleanup = (
        await run_jobs(stub, job_names=["cleanup_orphaned_records"], scheduled_time=later)
    ).runs[0]
    assert cleanup.status == SUCCEEDED
    assert summary(cleanup)["orphaned_outcomes_deleted"] == 1
    repaired = (
        await run_jobs(stub, job_names=integrity, scheduled_time=at(TICK + timedelta(hours=2)))
    ).runs[0]
    assert (repaired.status, repaired.check_passed) == (SUCCEEDED, True)


async def test_update_learning_metrics_reconciles_a_sample_and_rebuilds_what_drifted(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None, job_reconcile_repositories=2)
    job = ["update_learning_metrics"]
    clean = (await run_jobs(stub, job_names=job)).runs[0]
    assert clean.status == SUCCEEDED
    assert summary(clean)["repositories_reconciled"] == 2  # of the 4: the setting's sample
    assert (summary(clean)["mismatches"], summary(clean)["repaired"]) == (0, False)
    counts = "SELECT scope_type, scope_id, dimension, key, shown, positive FROM learning_metrics"
    async with db_engine.connect() as connection:
        before = sorted((await connection.execute(text(counts))).all())
    async with db_engine.begin() as connection:  # every repository's rule counts drift
        await connection.execute(
            text("UPDATE learning_metrics SET positive = positive + 1 WHERE scope_type = 3")
        )

    later = at(TICK + timedelta(hours=1))
    drifted = (await run_jobs(stub, job_names=job, scheduled_time=later)).runs[0]
    assert drifted.status == SUCCEEDED
    assert summary(drifted)["mismatches"] > 0
    assert summary(drifted)["repaired"] is True
    async with db_engine.connect() as connection:
        assert sorted((await connection.execute(text(counts))).all()) == before
    check = (
        await run_jobs(stub, job_names=["validate_data_integrity"], scheduled_time=later)
    ).runs[0]
    assert (check.status, check.check_passed) == (SUCCEEDED, True)


async def test_re_running_the_same_tick_runs_nothing(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None)
    names = ["update_learning_metrics", "validate_data_integrity"]
    first = await run_jobs(stub, job_names=names)
    # Another firing in the same hour (Kubernetes only promises "about once").
    second = await run_jobs(stub, job_names=names, scheduled_time=at(TICK + timedelta(minutes=40)))
    assert [r.run_id for r in second.runs] == [r.run_id for r in first.runs]
    assert all(r.already_ran for r in second.runs)
    assert [r.status for r in second.runs] == [SUCCEEDED, SUCCEEDED]
    assert await scalar(db_engine, "SELECT count(*) FROM job_runs") == 2
    assert await scalar(db_engine, "SELECT sum(attempts) FROM job_runs") == 2
    # The same request id again is a replay; with other content it is an error.
    replay = await run_jobs(stub, job_names=names, request_id="cron-1")
    assert replay.replayed is False
    again = await run_jobs(stub, job_names=names, request_id="cron-1")
    assert again.replayed is True
    with pytest.raises(Exception, match=r"REQUEST_ID_REUSED|already used"):
        await run_jobs(stub, job_names=names[:1], request_id="cron-1")


async def test_a_concurrent_caller_is_told_the_job_is_running_and_by_whom(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None)
    async with db_engine.connect() as holder, holder.begin():
        await holder.execute(text("SET LOCAL application_name = 'the-other-replica'"))
        await holder.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"),
            {"a": LOCK_NAMESPACE, "b": lock_key("validate_data_integrity")},
        )
        skipped = (await run_jobs(stub, job_names=["validate_data_integrity"])).runs[0]
        assert skipped.status == learning_pb2.JOB_STATUS_SKIPPED
        assert "the-other-replica" in skipped.holder
        assert "already running" in skipped.reason
    ran = (await run_jobs(stub, job_names=["validate_data_integrity"])).runs[0]
    assert ran.status == SUCCEEDED
    assert ran.run_id == skipped.run_id  # the slot's one row, now run


async def test_two_concurrent_run_jobs_one_runs_and_the_other_is_told_it_is_running(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None)
    names = ["update_learning_metrics"]
    results = await asyncio.gather(*(run_jobs(stub, job_names=names) for _ in range(2)))
    runs = sorted((r.runs[0] for r in results), key=lambda r: r.status)
    statuses = [r.status for r in runs]
    # Either the second caller found the lock held (SKIPPED with the holder) or, arriving after
    # the first finished, the slot already run; never two runs.
    assert statuses in (
        [SUCCEEDED, learning_pb2.JOB_STATUS_SKIPPED],
        [SUCCEEDED, SUCCEEDED],
    )
    if statuses[1] == learning_pb2.JOB_STATUS_SKIPPED:
        assert runs[1].holder.startswith("learning jobs")
    else:
        assert sum(r.already_ran for r in runs) == 1
    assert await scalar(db_engine, "SELECT attempts FROM job_runs") == 1


async def test_a_repository_that_always_fails_leaves_the_others_done_and_the_run_partial(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    insights = await start_insights(start_service)
    stub = await start_learning(start_service, insights)
    good = sorted(generated.repositories)[:2]
    missing = "https://git.example.com/nobody/gone"
    run = (
        await run_jobs(
            stub, job_names=["generate_learning_paths"], repository_urls=[*good, missing]
        )
    ).runs[0]
    assert run.status == learning_pb2.JOB_STATUS_PARTIAL
    assert run.attempts == 3
    assert sorted(run.repositories_done) == good
    assert [f.repository_url for f in run.repositories_failed] == [missing]
    assert "NOT_FOUND" in run.repositories_failed[0].reason
    listed = await stub.ListJobRuns(
        learning_pb2.ListJobRunsRequest(status=learning_pb2.JOB_STATUS_PARTIAL),
        metadata=auth("reader"),
    )
    assert [r.run_id for r in listed.runs] == [run.run_id]


async def test_insights_unreachable_fails_the_job_after_three_attempts(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    stub = await start_learning(start_service, None, insights_timeout_seconds=2.0)
    run = (await run_jobs(stub, job_names=["calculate_roi"])).runs[0]
    assert run.status == learning_pb2.JOB_STATUS_FAILED
    assert run.attempts == 3
    assert "UNAVAILABLE" in run.error or "AioRpcError" in run.error


async def test_with_the_kill_switch_engaged_jobs_are_skipped_with_the_reason(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    control = ControlStub((await start_control(start_service)).channel)
    stub = await start_learning(start_service, None)
    # Wait for the replica to confirm: a slot run before it applied the switch would be
    # recorded as run, and every later call for that slot would answer that run.
    await kill_switch(control, True, reason="incident 7", wait_for_replicas=Duration(seconds=10))
    for _ in range(100):  # the learning replica applies the new snapshot within a poll
        skipped = (await run_jobs(stub, job_names=["update_learning_metrics"])).runs[0]
        if skipped.status == learning_pb2.JOB_STATUS_SKIPPED:
            break
        await asyncio.sleep(0.05)
    assert skipped.status == learning_pb2.JOB_STATUS_SKIPPED
    assert "incident 7" in skipped.reason
    assert skipped.attempts == 0
    assert await scalar(db_engine, "SELECT reason FROM job_runs") == skipped.reason
    await kill_switch(control, False, reason="resolved")
    for _ in range(100):  # the same slot runs once the switch is released
        ran = (await run_jobs(stub, job_names=["update_learning_metrics"])).runs[0]
        if ran.status == SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert ran.status == SUCCEEDED
    assert ran.run_id == skipped.run_id


async def test_bad_requests_are_invalid_argument(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    stub = await start_learning(start_service, None)
    for fields in (
        {},
        {"job_names": ["no_such_job"]},
        {"frequency": HOURLY, "job_names": ["analyze_trends"]},
    ):
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            await run_jobs(stub, **fields)


class TraceIds(logging.Handler):
    """The trace id current when insights logs its refresh (set from the incoming metadata)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "insights refreshed":
            self.seen.append(current_trace_id())


async def test_insights_jobs_carry_the_callers_trace_into_the_insights_service(
    start_service: StartService, db_engine: AsyncEngine, generated: GeneratedLog
) -> None:
    insights = await start_insights(start_service)
    stub = await start_learning(start_service, insights)
    handler = TraceIds()
    logger = logging.getLogger("reviewlearn.insights.refresh")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with trace.get_tracer("tests").start_as_current_span("cronjob"):
            caller_trace = current_trace_id()
            carrier: dict[str, str] = {}
            inject(carrier)
            response = await stub.RunJobs(
                learning_pb2.RunJobsRequest(job_names=["calculate_roi"], scheduled_time=at(TICK)),
                metadata=(*auth("operator"), *carrier.items()),
                timeout=120,
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert response.runs[0].status == SUCCEEDED
    assert caller_trace
    assert handler.seen
    assert set(handler.seen) == {caller_trace}


async def test_job_metrics_are_exported_on_the_side_port(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    service = await start_service(
        build_learning, LearningSettings, insights_address="127.0.0.1:1", **FAST_RETRIES
    )
    stub: Stub = learning_pb2_grpc.LearningServiceStub(service.channel)
    await run_jobs(stub, job_names=["validate_data_integrity"])
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service.runtime.metrics_port}"
    ) as http:
        exported = (await http.get("/metrics")).text
    families = {family.name: family for family in text_string_to_metric_families(exported)}
    durations = [
        s
        for s in families["learning_jobs_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels.get("job") == "validate_data_integrity"
    ]
    assert durations
    assert durations[0].value >= 1
    assert durations[0].labels["status"] == "succeeded"
    for name in (
        "learning_jobs_success_rate",
        "batch_job_success_rate",
        "data_integrity_check_pass_rate",
    ):
        values = [s.value for s in families[name].samples]
        assert values, name
        assert all(0.0 <= v <= 1.0 for v in values), name


async def test_the_scheduler_state_is_in_health(
    start_service: StartService, db_engine: AsyncEngine
) -> None:
    service = await start_service(
        build_learning,
        LearningSettings,
        job_scheduler_enabled=True,
        job_scheduler_tick_seconds=3600.0,  # no tick during the test: the clock test is a unit test
        job_schedule_daily="15 3 * * *",
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{service.runtime.metrics_port}"
    ) as http:
        health = (await http.get("/healthz")).json()
    scheduler = health["metrics"]["job_scheduler"]
    assert set(scheduler) == {"hourly", "daily", "weekly"}
    assert scheduler["daily"]["cron"] == "15 3 * * *"
    assert datetime.fromisoformat(scheduler["daily"]["next"]).strftime("%H:%M") == "03:15"
