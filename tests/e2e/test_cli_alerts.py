"""`reviewlearn alerts ...` as an operator runs it, against a running control service."""

from __future__ import annotations

from reviewlearn.control.v1 import control_pb2

from services.control.convert import alert_rule_to_pb
from services.control.domain.alert_catalogue import DEFAULT_RULES
from tests.conftest import StartService, auth
from tests.e2e.test_cli_gates import cli
from tests.integration.control.conftest import ControlStub, start_control


async def test_the_alerts_commands(start_service: StartService) -> None:
    control = await start_control(start_service, alert_evaluation_seconds=3600.0)
    port = ["--control-port", str(control.runtime.port)]
    [backlog] = [r for r in DEFAULT_RULES if r.name == "ReviewlearnFeedbackBacklogHigh"]
    await ControlStub(control.channel).UpsertAlertRule(
        control_pb2.UpsertAlertRuleRequest(rule=alert_rule_to_pb(backlog)),
        metadata=auth("operator"),
    )

    code, output = await cli("alerts", "list", *port)
    assert code == 0, output
    assert "ReviewlearnFeedbackBacklogHigh" in output
    assert "feedback_backlog > 1000" in output

    code, output = await cli(
        "alerts", "silence", "ReviewlearnFeedbackBacklogHigh", "--minutes", "30",
        "--comment", "upgrade", "--match", "team=reviewlearn", *port,
    )  # fmt: skip
    assert code == 0, output
    assert "upgrade" in output
    assert "team=reviewlearn" in output
    code, output = await cli("alerts", "test", "log", "--message", "drill", *port)
    assert (code, "log: delivered after 1 attempt(s)" in output) == (0, True), output
    code, output = await cli("alerts", "test", "slack", *port)
    assert code == 1, output  # no webhook configured
    assert "not configured" in output

    code, output = await cli("alerts", "export-prometheus", "--check")
    assert code == 0, output
