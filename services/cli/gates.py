"""``reviewlearn kill-switch on|off`` and ``reviewlearn gates``: the control plane for people.

Both call the control service's RPCs like any client (the CLI never imports a service) and show
what every replica applied, so an operator sees the switch take effect rather than assume it.
"""

from __future__ import annotations

import asyncio
import uuid
from enum import StrEnum
from typing import Annotated

import grpc
import typer
from google.protobuf.duration_pb2 import Duration
from reviewlearn.common.v1 import common_pb2
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from rich.console import Console
from rich.table import Table

from services.cli.client import ControlTarget, console, control_target, rpc_failed
from services.cli.supervisor import DEFAULT_GRPC_PORTS

FEATURES = [
    value for value in common_pb2.Feature.values() if value != common_pb2.FEATURE_UNSPECIFIED
]


def _feature_name(value: int) -> str:
    return common_pb2.Feature.Name(value).removeprefix("FEATURE_").lower()  # type: ignore[arg-type]


def _replica_table(title: str, replicas: list[control_pb2.ReplicaState], version: int) -> Table:
    table = Table(title=title)
    for column in ("service", "replica", "applied version", "gates", "last heartbeat"):
        table.add_column(column)
    for replica in replicas:
        behind = replica.applied_version < version
        applied = (
            f"[red]{replica.applied_version}[/red]" if behind else str(replica.applied_version)
        )
        state = "[yellow]stale[/yellow]" if replica.gates_stale else "fresh"
        if replica.hard_kill:
            state += ", LEARNING_ENABLED=false"
        table.add_row(
            replica.service,
            replica.replica_id,
            applied,
            state,
            replica.heartbeat_time.ToDatetime().strftime("%H:%M:%S"),
        )
    return table


def _state(enabled: bool) -> str:
    return "[green]on[/green]" if enabled else "[red]off[/red]"


async def set_kill_switch(
    target: ControlTarget, *, engaged: bool, reason: str, wait_seconds: float, console: Console
) -> int:
    """Engages or releases the kill switch; 0 when every live replica applied it, else 1."""
    wait = Duration()
    wait.FromNanoseconds(int(wait_seconds * 1e9))
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        response = await stub.SetKillSwitch(
            control_pb2.SetKillSwitchRequest(
                request_id=f"cli-{uuid.uuid4()}",
                engaged=engaged,
                reason=reason,
                wait_for_replicas=wait,
            ),
            metadata=target.operator,
            timeout=wait_seconds + 10,
        )
    state = (
        "[red]ENGAGED[/red]: learning is off everywhere" if engaged else "[green]released[/green]"
    )
    console.print(f"kill switch {state} (gate version {response.version})")
    propagation = response.propagation
    replicas = [*propagation.applied, *propagation.pending]
    console.print(_replica_table("replicas", replicas, response.version))
    waited = propagation.waited.ToTimedelta().total_seconds()
    if propagation.converged:
        console.print(f"all {len(replicas)} live replicas applied it within {waited:.2f}s")
        return 0
    console.print(
        f"[yellow]{len(propagation.pending)} replica(s) had not applied version "
        f"{response.version} after {waited:.1f}s[/yellow]; they keep polling — check again with "
        "`reviewlearn gates`"
    )
    return 1


async def show_gates(target: ControlTarget, *, console: Console) -> None:
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        snapshot = (
            await stub.GetFeatureGates(control_pb2.GetFeatureGatesRequest(), metadata=target.reader)
        ).snapshot
        propagation = await stub.GetGatePropagation(
            control_pb2.GetGatePropagationRequest(), metadata=target.reader
        )
    if snapshot.kill_switch_engaged:
        console.print(
            f"kill switch [red]ENGAGED[/red] by {snapshot.kill_switch_updated_by}: "
            f"{snapshot.kill_switch_reason}"
        )
    else:
        console.print("kill switch [green]released[/green]")
    rollout = snapshot.rollout
    if rollout.in_force:
        sticky = f", sticky exposure ({rollout.sticky_repositories} kept)" * rollout.sticky_exposure
        console.print(
            f"rollout: phase {rollout.phase} ({rollout.percentage}% of repositories){sticky}"
        )
    else:
        console.print("rollout: not started (learning applies to every repository)")

    globals_ = {g.feature: g for g in snapshot.gates if not g.repository_url}
    killed = "[red]off[/red] (kill switch)" if snapshot.kill_switch_engaged else ""
    table = Table(title=f"feature gates (version {snapshot.version})")
    for column in ("feature", "repository", "gate", "in effect", "reason", "by"):
        table.add_column(column)
    for value in FEATURES:
        gate = globals_.get(value)
        if gate is None:
            table.add_row(_feature_name(value), "(all)", "on (default)", killed or "on", "", "")
        else:
            state = _state(gate.enabled)
            table.add_row(
                _feature_name(value), "(all)", state, killed or state, gate.reason, gate.updated_by
            )
    for gate in snapshot.gates:
        if gate.repository_url:
            state = _state(gate.enabled)
            table.add_row(
                _feature_name(gate.feature),
                gate.repository_url,
                state,
                killed or state,
                gate.reason,
                gate.updated_by,
            )
    console.print(table)
    console.print(
        _replica_table(
            "replicas "
            + ("(all applied the current version)" if propagation.converged else "(converging)"),
            list(propagation.replicas),
            propagation.current_version,
        )
    )


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


def kill_switch_command(
    state: Annotated[Switch, typer.Argument(help="on turns all learning off; off releases it.")],
    reason: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
    host: Annotated[str, typer.Option(help="Where the control service listens.")] = "127.0.0.1",
    control_port: int = DEFAULT_GRPC_PORTS["control"],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for every replica to apply it (max 30).")
    ] = 5.0,
) -> None:
    if not reason.strip():
        console.print("[red]--reason must say why (it is kept in the audit log)[/red]")
        raise typer.Exit(2)
    target = control_target(host, control_port, "the kill switch")
    try:
        code = asyncio.run(
            set_kill_switch(
                target,
                engaged=state is Switch.ON,
                reason=reason,
                wait_seconds=min(max(wait, 0.0), 30.0),
                console=Console(),
            )
        )
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, target.address) from error
    raise typer.Exit(code)


def gates_command(
    host: Annotated[str, typer.Option(help="Where the control service listens.")] = "127.0.0.1",
    control_port: int = DEFAULT_GRPC_PORTS["control"],
) -> None:
    target = control_target(host, control_port, "`reviewlearn gates`")
    try:
        asyncio.run(show_gates(target, console=Console()))
    except grpc.aio.AioRpcError as error:
        raise rpc_failed(error, target.address) from error
