"""The ``reviewlearn`` command loads only the module of the command it runs, and still lists
every command with its help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from services.cli.app import COMMANDS, app

# Runs the CLI in a fresh interpreter and prints which CLI modules it imported.
IMPORTED = """
import sys
from services.cli.app import app
try:
    app(sys.argv[1:], prog_name="reviewlearn")
except SystemExit:
    pass
print(",".join(sorted(m for m in sys.modules if m.startswith("services.cli."))))
"""


def imported_cli_modules(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(done.stdout.strip().splitlines()[-1].split(","))


def test_the_listing_imports_no_command_module() -> None:
    assert imported_cli_modules("--help") == {"services.cli.app"}


def test_a_command_imports_its_own_module_and_not_the_others() -> None:
    imported = imported_cli_modules("migrate", "--help")
    assert "services.cli.database" in imported
    others = {entry.where.partition(":")[0] for entry in COMMANDS.values()}
    assert imported & others == {"services.cli.database"}


def test_the_listing_shows_every_command_with_its_help() -> None:
    listed = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for name, entry in COMMANDS.items():
        first_line = entry.help.splitlines()[0]
        assert f"{name} " in listed.output
        assert first_line in listed.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_with_the_listed_help(name: str) -> None:
    loaded = COMMANDS[name].load(name)
    assert (loaded.name, loaded.help) == (name, COMMANDS[name].help)
    shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert COMMANDS[name].help.splitlines()[0] in shown.output
