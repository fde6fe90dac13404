"""``reviewlearn alerts list|history|silence|test|export-prometheus``: alerting for people.

The commands call the control service's RPCs like any client (the CLI never imports a service);
``export-prometheus`` runs the control service's own exporter as a module, as ``validate`` does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.duration_pb2 import Duration
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.cli.client import ControlTarget, control_target, rpc_failed
from services.cli.supervisor import DEFAULT_GRPC_PORTS

# Its help is with the other commands' in services.cli.app.
alerts_app = typer.Typer()
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

Host = Annotated[str, typer.Option(help="Where the control service listens.")]
Port = Annotated[int, typer.Option(help="The control service's gRPC port.")]
CONTROL_PORT = DEFAULT_GRPC_PORTS["control"]
# The channel names the command takes, read from the contract (CHANNEL_SLACK -> "slack").
CHANNELS = {
    name.removeprefix("CHANNEL_").lower(): number
    for name, number in control_pb2.Channel.items()
    if number != control_pb2.CHANNEL_UNSPECIFIED
}


def _run(host: str, port: int, call: Callable[[ControlTarget], Coroutine[Any, Any, T]]) -> T:
    target = control_target(host, port, "`reviewlearn alerts`")
    try:
        return asyncio.run(call(target))
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, target.address) from error


def _stub(channel: grpc.aio.Channel) -> control_pb2_grpc.ControlServiceAsyncStub:
    return control_pb2_grpc.ControlServiceStub(channel)


def _name(enum: type, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def _seconds(duration: Duration) -> str:
    seconds = duration.seconds
    return f"{seconds // 60}m" if seconds % 60 == 0 and seconds else f"{seconds}s"


def _alert_table(title: str, alerts: list[control_pb2.Alert]) -> Table:
    table = Table(title=title)
    for column in ("id", "rule", "state", "severity", "value", "since", "silenced", "summary"):
        table.add_column(column)
    for alert in alerts:
        table.add_row(
            str(alert.alert_id),
            alert.rule_name,
            _name(control_pb2.AlertState, alert.state, "ALERT_STATE_"),
            _name(control_pb2.AlertSeverity, alert.severity, "ALERT_SEVERITY_"),
            f"{alert.value:.4g}",
            alert.active_since.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if alert.silenced else "",
            alert.summary,
        )
    return table


@alerts_app.command("list")
def list_alerts(host: Host = "127.0.0.1", control_port: Port = CONTROL_PORT) -> None:
    """The rules, and the alerts pending or firing now."""

    async def call(target: ControlTarget) -> None:
        async with grpc.aio.insecure_channel(target.address) as channel:
            stub = _stub(channel)
            rules = await stub.ListAlertRules(
                control_pb2.ListAlertRulesRequest(), metadata=target.reader
            )
            active = await stub.ListActiveAlerts(
                control_pb2.ListActiveAlertsRequest(), metadata=target.reader
            )
        table = Table(title="alert rules")
        for column in ("rule", "severity", "condition", "for", "channels", "on", "safeguard"):
            table.add_column(column)
        for rule in rules.rules:
            table.add_row(
                rule.name,
                _name(control_pb2.AlertSeverity, rule.severity, "ALERT_SEVERITY_"),
                f"{rule.signal} {rule.comparison} {rule.threshold:g}",
                _seconds(rule.for_duration),
                ",".join(_name(control_pb2.Channel, c, "CHANNEL_") for c in rule.channels),
                "yes" if rule.enabled else "[red]no[/red]",
                "yes" if rule.safeguard else "",
            )
        out.print(table)
        out.print(_alert_table("active alerts", list(active.alerts)))

    _run(host, control_port, call)


@alerts_app.command()
def history(
    rule: Annotated[str, typer.Option(help="Only this rule's alerts.")] = "",
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    host: Host = "127.0.0.1",
    control_port: Port = CONTROL_PORT,
) -> None:
    """Past and present alerts, silenced ones included, newest first."""

    async def call(target: ControlTarget) -> None:
        alerts: list[control_pb2.Alert] = []
        token = ""
        async with grpc.aio.insecure_channel(target.address) as channel:
            while len(alerts) < limit:
                page = await _stub(channel).ListAlertHistory(
                    control_pb2.ListAlertHistoryRequest(
                        rule_name=rule, page_size=min(limit - len(alerts), 500), page_token=token
                    ),
                    metadata=target.reader,
                )
                alerts += page.alerts
                token = page.next_page_token
                if not token:
                    break
        out.print(_alert_table("alert history", alerts))

    _run(host, control_port, call)


@alerts_app.command()
def silence(
    rules: Annotated[
        list[str] | None, typer.Argument(help="Rule names (none: every rule).")
    ] = None,
    minutes: Annotated[float, typer.Option(help="How long the silence lasts.")] = 60.0,
    comment: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
    match: Annotated[
        list[str] | None, typer.Option(help="Label matcher name=value (repeatable).")
    ] = None,
    expire: Annotated[int | None, typer.Option(help="End this silence now instead.")] = None,
    show: Annotated[bool, typer.Option("--list", help="List the active silences.")] = False,
    host: Host = "127.0.0.1",
    control_port: Port = CONTROL_PORT,
) -> None:
    """Silence rules (by name and/or labels) for a while, end a silence, or list them."""
    matchers: dict[str, str] = {}
    for item in match or []:
        name, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]--match {item!r}: write name=value[/red]")
            raise typer.Exit(2)
        matchers[name.strip()] = value.strip()

    async def call(target: ControlTarget) -> None:
        async with grpc.aio.insecure_channel(target.address) as channel:
            stub = _stub(channel)
            if expire is not None:
                ended = await stub.ExpireSilence(
                    control_pb2.ExpireSilenceRequest(silence_id=expire), metadata=target.operator
                )
                silences = [ended.silence]
            elif show:
                listed = await stub.ListSilences(
                    control_pb2.ListSilencesRequest(), metadata=target.reader
                )
                silences = list(listed.silences)
            else:
                created = await stub.CreateSilence(
                    control_pb2.CreateSilenceRequest(
                        request_id=str(uuid.uuid4()),
                        rule_names=rules or [],
                        matchers=matchers,
                        duration=Duration(seconds=int(minutes * 60)),
                        comment=comment,
                    ),
                    metadata=target.operator,
                )
                silences = [created.silence]
        table = Table(title="silences")
        for column in ("id", "rules", "matchers", "until", "active", "by", "comment"):
            table.add_column(column)
        for s in silences:
            table.add_row(
                str(s.silence_id),
                ", ".join(s.rule_names) or "(all)",
                ", ".join(f"{k}={v}" for k, v in sorted(s.matchers.items())),
                s.end_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "yes" if s.active else "no",
                s.created_by,
                s.comment,
            )
        out.print(table)

    _run(host, control_port, call)


@alerts_app.command("test")
def send_test(
    channel: Annotated[str, typer.Argument(help="pagerduty, slack, email or log.")],
    message: Annotated[str, typer.Option(help="The text to send.")] = "",
    host: Host = "127.0.0.1",
    control_port: Port = CONTROL_PORT,
) -> None:
    """Send a test notification through a channel and say whether it arrived."""
    if channel not in CHANNELS:
        err.print(f"[red]unknown channel {channel!r}; choose one of {', '.join(CHANNELS)}[/red]")
        raise typer.Exit(2)

    async def call(target: ControlTarget) -> control_pb2.SendTestNotificationResponse:
        async with grpc.aio.insecure_channel(target.address) as grpc_channel:
            request = control_pb2.SendTestNotificationRequest(
                channel=CHANNELS[channel],
                message=message,
            )
            return await _stub(grpc_channel).SendTestNotification(request, metadata=target.operator)

    result = _run(host, control_port, call)
    verdict = "[green]delivered[/green]" if result.delivered else "[red]not delivered[/red]"
    out.print(f"{channel}: {verdict} after {result.attempts} attempt(s): {result.detail}")
    raise typer.Exit(0 if result.delivered else 1)


@alerts_app.command("export-prometheus")
def export_prometheus(
    check: Annotated[
        bool, typer.Option(help="Exit 1 if the committed files differ instead of writing.")
    ] = False,
) -> None:
    """Write the alert rules as Prometheus rules into deploy/ (plain rule file and the
    Prometheus Operator's PrometheusRule)."""
    command = [sys.executable, "-m", "services.control.prometheus_export"]
    code = subprocess.run([*command, *(["--check"] if check else [])], check=False).returncode
    raise typer.Exit(code)
