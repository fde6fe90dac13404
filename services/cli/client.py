"""How the CLI's commands reach a running system: the tokens they call with, the control
service's address, and what they say when a call fails."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import typer
from rich.console import Console

from services.cli.embedded import state_dir
from shared.auth import Role, parse_tokens

console = Console(stderr=True)
# What a call sends besides its request: the authorization header.
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ControlTarget:
    address: str
    reader: Metadata
    operator: Metadata


def bearer_tokens(who: str) -> Callable[[Role], Metadata]:
    """Call metadata per role from REVIEWLEARN_TOKENS or the tokens `reviewlearn up` saved;
    the operator token stands in for a missing role."""
    spec = os.environ.get("REVIEWLEARN_TOKENS", "").strip()
    token_file = state_dir() / "tokens"
    if not spec and token_file.exists():
        spec = token_file.read_text().strip()
    if not spec:
        console.print(
            "[red]no tokens: start the system with `make run` (or `reviewlearn up`) first, "
            "or set REVIEWLEARN_TOKENS[/red]"
        )
        raise typer.Exit(2)
    registry = parse_tokens(spec)
    operator = registry.token_of(Role.OPERATOR)
    if operator is None:
        console.print(f"[red]{who} needs an operator token in REVIEWLEARN_TOKENS[/red]")
        raise typer.Exit(2)

    def bearer(role: Role) -> Metadata:
        return (("authorization", f"Bearer {registry.token_of(role) or operator}"),)

    return bearer


def control_target(host: str, port: int, who: str) -> ControlTarget:
    bearer = bearer_tokens(who)
    return ControlTarget(
        address=f"{host}:{port}", reader=bearer(Role.READER), operator=bearer(Role.OPERATOR)
    )


def rpc_failed(
    error: grpc.aio.AioRpcError, address: str, *, service: str = "control", exit_code: int = 1
) -> typer.Exit:
    """Says why a call to the service at ``address`` failed; the exit to raise."""
    if error.code() is grpc.StatusCode.UNAVAILABLE:
        console.print(
            f"[red]cannot reach the {service} service at {address}: {error.details()}[/red] — "
            f"is it running? (--host / --{service}-port)"
        )
    else:
        console.print(f"[red]{error.code().name}: {error.details()}[/red]")
    return typer.Exit(exit_code)
