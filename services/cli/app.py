"""The ``reviewlearn`` command: ``up``, ``serve``, ``migrate``, ``demo``, ``evaluate``,
``validate``, ``kill-switch``, ``gates``, ``jobs``, ``alerts``, ``loadtest``.

Each command lives in its own module, imported only when that command runs: the modules pull
in gRPC stubs, SQLAlchemy, Alembic and NumPy, and ``reviewlearn --help`` (or a container's
``reviewlearn serve``) should not wait for all of them. The commands' help is therefore here,
where the listing reads it without importing anything, and the loaded command gets it too.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from typer import _click  # Typer's own copy of Click, whose classes TyperGroup builds on
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """Where a command is (``module:attribute``, a function or a ``typer.Typer``) and its help."""

    where: str
    help: str

    def load(self, name: str) -> _click.Command:
        module, _, attribute = self.where.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        parent = typer.Typer(add_completion=False)
        if isinstance(target, typer.Typer):
            parent.add_typer(target, name=name, help=self.help)
        else:
            parent.command(name, help=self.help)(target)
        return typer.main.get_group(parent).commands[name]


# In the order `reviewlearn --help` lists them.
COMMANDS = {
    "up": LazyCommand(
        "services.cli.up:up_command",
        "Start the whole system: database (embedded unless configured), migrations, 4 services.",
    ),
    "serve": LazyCommand(
        "services.cli.workers:serve_command",
        "Run one service in the foreground (for containers); configured by REVIEWLEARN_* vars.",
    ),
    "demo": LazyCommand(
        "services.cli.demo:demo_command",
        "Load a synthetic review history into the running system and show what it learned.",
    ),
    "kill-switch": LazyCommand(
        "services.cli.gates:kill_switch_command",
        "Engage (on) or release (off) the kill switch, and show which replicas applied it.",
    ),
    "gates": LazyCommand(
        "services.cli.gates:gates_command",
        "Show the kill switch, every feature gate and override, the rollout, and the replicas.",
    ),
    "evaluate": LazyCommand(
        "services.cli.evaluate:evaluate_command",
        "Replay the history out of time: the learned model against raw confidence and a per-rule"
        "\nrate (AUC, precision@k, calibration, what hiding would hide).",
    ),
    "validate": LazyCommand(
        "services.cli.validation:validate_command",
        "Check the system: integrity (orphans, keys, counts vs log, watermarks), metrics (every"
        "\nlearned and insights number vs a recompute), contracts (every RPC through reflection).",
    ),
    "migrate": LazyCommand(
        "services.cli.database:migrate_command",
        "Apply the database migrations (or revert them with --downgrade).",
    ),
    "loadtest": LazyCommand(
        "services.cli.loadtest:loadtest_command",
        "Drive a running system with a realistic mix (RecordFindings, BatchRecordFeedback,"
        "\nRankSuggestions, insights reads, gate evaluations) at a target rate and report"
        "\nthroughput, p50/p95/p99 per RPC, errors by code and whether the plan's target held.",
    ),
    "jobs": LazyCommand(
        "services.cli.jobs:jobs_app", "Run the batch jobs now, or show their history."
    ),
    "alerts": LazyCommand(
        "services.cli.alerts:alerts_app",
        "Alert rules, active alerts, history, silences, test notifications.",
    ),
}


class _Placeholder(TyperCommand):
    """A command's name and help, standing in until the command is loaded."""


class LazyGroup(TyperGroup):
    """Lists every command from ``COMMANDS``; imports a command's module only to run it (or to
    show its own help)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False
        for name, command in COMMANDS.items():
            self.add_command(_Placeholder(name, help=command.help))

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if self._listing or not isinstance(command, _Placeholder):
            return command
        loaded = COMMANDS[cmd_name].load(cmd_name)
        self.commands[cmd_name] = loaded
        return loaded

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        # The listing needs each command's name and help only: the placeholders have both.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    help="reviewlearn: make an automated code reviewer learn from developer feedback.",
    no_args_is_help=True,
    add_completion=False,
)


# A group needs a callback; this one has nothing to do before the chosen command runs.
@app.callback()
def _root() -> None:
    pass


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()


if __name__ == "__main__":
    main()
