"""``reviewlearn validate integrity|metrics|contracts`` against a running system with a real
history in it: each passes on the clean system and catches a defect planted in the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reviewlearn.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2, learning_pb2_grpc
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.cli.contracts import check_contracts
from services.cli.loader import load_history
from services.cli.synthetic import generate_history
from shared.rpc.reflection import enable_reflection
from tests.conftest import auth
from tests.e2e.live_system import LiveSystem, live_system
from tests.metric_names import exported_series

__all__ = ["live_system"]


def validate(system: LiveSystem, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", "validate", *args],
        env={**system.cli_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _load(system: LiveSystem) -> None:
    history = generate_history(seed=3, reviews=40, findings_per_review=6)
    async with grpc.aio.insecure_channel(system.address("feedback")) as channel:
        await load_history(
            feedback_pb2_grpc.FeedbackServiceStub(channel), history, metadata=auth("ingest")
        )
    async with grpc.aio.insecure_channel(system.address("learning")) as channel:
        learning = learning_pb2_grpc.LearningServiceStub(channel)
        for _ in range(600):
            metrics = await learning.GetLearningMetrics(
                learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
                metadata=auth("reader"),
            )
            if metrics.backlog == 0 and metrics.metrics:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("learning did not fold the history")


async def _sql(system: LiveSystem, statement: str) -> None:
    engine = create_async_engine(system.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def loaded(live_system: LiveSystem) -> LiveSystem:
    asyncio.run(_load(live_system))
    return live_system


def test_integrity_passes_clean_and_catches_an_orphan(loaded: LiveSystem) -> None:
    clean = validate(loaded, "integrity")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "the database is consistent" in clean.stdout
    # A learning outcome of a finding that never existed (deleted by hand, not via the RPC).
    asyncio.run(
        _sql(
            loaded,
            "INSERT INTO finding_outcomes SELECT 987654321, team_id, repository_id, pull_request,"
            " rule_id, category, severity, confidence, fingerprint, pattern_key, outcome,"
            " win_decisive, win_occurred_at, win_feedback_id, created_at, updated_at"
            " FROM finding_outcomes LIMIT 1",
        )
    )
    try:
        broken = validate(loaded, "integrity")
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "learning outcomes of missing findings" in broken.stdout
        assert "what to do next" in broken.stdout
        assert "reviewlearn validate metrics --repair" in broken.stdout
    finally:
        asyncio.run(_sql(loaded, "DELETE FROM finding_outcomes WHERE finding_id = 987654321"))


def test_metrics_passes_clean_and_catches_wrong_numbers(loaded: LiveSystem) -> None:
    clean = validate(loaded, "metrics")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "equal a full recompute and a brute-force recount" in clean.stdout
    assert "insights rollups equal a rebuild from the log and a brute-force recount" in clean.stdout
    asyncio.run(  # one insights rollup one finding too high
        _sql(
            loaded,
            "UPDATE insight_rollups SET findings = findings + 1 WHERE (repository_id, day,"
            " category, severity, rule_id, outcome) = (SELECT repository_id, day, category,"
            " severity, rule_id, outcome FROM insight_rollups ORDER BY 1, 2, 3, 4, 5, 6 LIMIT 1)",
        )
    )
    asyncio.run(  # and a learned count two too high
        _sql(
            loaded,
            "UPDATE learning_metrics SET positive = positive + 2"
            " WHERE scope_type = 1 AND dimension = 2 AND key = 'security'",
        )
    )
    broken = validate(loaded, "metrics")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "insight_rollups" in broken.stdout
    assert "security" in broken.stdout
    assert "brute force" in broken.stdout
    assert "--repair" in broken.stdout
    repaired = validate(loaded, "metrics", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "rebuilt the insights rollups from the log" in repaired.stdout
    assert "rebuilt from" in repaired.stdout


_WRITTEN_BY_OPERATORS = (
    "SELECT (SELECT count(*) FROM audit_events), (SELECT count(*) FROM threshold_history),"
    " (SELECT count(*) FROM learned_models), (SELECT version FROM learned_models WHERE active),"
    " (SELECT count(*) FROM findings), (SELECT count(*) FROM suggestion_feedback),"
    " (SELECT version FROM gate_state)"
)


async def _scalars(system: LiveSystem, statement: str) -> tuple[object, ...]:
    engine = create_async_engine(system.database_url)
    try:
        async with engine.connect() as connection:
            return tuple((await connection.execute(text(statement))).one())
    finally:
        await engine.dispose()


def test_contracts_every_rpc_answers_a_documented_code(loaded: LiveSystem) -> None:
    targets = [arg for name in loaded.grpc_ports for arg in ("--target", loaded.address(name))]
    before = asyncio.run(_scalars(loaded, _WRITTEN_BY_OPERATORS))
    result = validate(loaded, "contracts", *targets)
    assert result.returncode == 0, result.stdout + result.stderr
    # Run against production, the check must change nothing: no audited change, no tune, no
    # model fitted or rolled back, nothing recorded or deleted, no gate moved.
    assert asyncio.run(_scalars(loaded, _WRITTEN_BY_OPERATORS)) == before
    for method in (
        "reviewlearn.feedback.v1.FeedbackService/RecordFindings",
        "reviewlearn.learning.v1.LearningService/RankSuggestions",
        "reviewlearn.insights.v1.InsightsService/GetTeamMetrics",
        "reviewlearn.control.v1.ControlService/SetKillSwitch",
        "grpc.health.v1.Health/Check",
    ):
        assert method in result.stdout
    assert "UNAUTHENTICATED" in result.stdout
    assert "INTERNAL" not in result.stdout


def test_contracts_cannot_check_an_unreachable_server() -> None:
    """Nothing is known about a server that does not answer: 75, not a pass or a failure."""
    console = Console(record=True, width=200)
    assert check_contracts(["127.0.0.1:1"], auth("operator"), console) == 75
    assert "is the system running" in console.export_text()


def test_the_metric_names_read_from_the_code_are_the_ones_scraped(loaded: LiveSystem) -> None:
    """tests/metric_names.py (which the dashboard test trusts) names what /metrics shows."""
    scraped = set()
    for port in loaded.metrics_ports.values():
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.labels.get("otel_scope_name", "").startswith("reviewlearn"):
                    scraped.add(sample.name)
                if sample.name == "gate_snapshot_version":  # the client that applies snapshots
                    assert sample.value >= 0, port
    assert len(scraped) >= 20
    assert scraped - exported_series() == set()
    assert {"gate_snapshot_version", "api_request_rate_total"} <= scraped


def test_contracts_fail_when_a_service_is_not_served(loaded: LiveSystem) -> None:
    console = Console(record=True, width=200)
    code = check_contracts([loaded.address("feedback")], auth("operator"), console)
    assert code == 1
    assert "not served at any target: reviewlearn.control.v1.ControlService" in (
        console.export_text()
    )


class _BrokenFeedback(feedback_pb2_grpc.FeedbackServiceServicer):
    """A feedback server with the bugs the check exists for: no auth interceptor, an exception
    that escapes (UNKNOWN), and every other method left unimplemented."""

    async def RecordFindings(self, request: object, context: object) -> object:
        raise RuntimeError("a bug")


async def test_contracts_catch_an_escaped_exception_and_missing_methods() -> None:
    server = grpc.aio.server()
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(_BrokenFeedback(), server)
    enable_reflection(
        [feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name], server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        console = Console(record=True, width=250)
        code = await asyncio.to_thread(
            check_contracts, [f"127.0.0.1:{port}"], auth("operator"), console
        )
    finally:
        await server.stop(grace=0)
    output = console.export_text()
    assert code == 1
    assert "RecordFindings (empty): UNKNOWN" in output
    assert "RecordFindings (no token): UNKNOWN" in output  # nothing asked for a token
    assert "GetFinding (empty): UNIMPLEMENTED" in output
    assert "what to do next" in output
