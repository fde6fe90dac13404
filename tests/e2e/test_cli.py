"""The operator commands as a person runs them: migrate and validate against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWLEARN_")}
    env["REVIEWLEARN_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "services.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrate_and_validate_commands(database_url: str, db_engine: AsyncEngine) -> None:
    assert run("migrate", database_url=database_url).returncode == 0
    ok = run("validate", database_url=database_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "equal a full recompute" in ok.stdout
    async with db_engine.begin() as connection:  # a count nothing in the log explains
        await connection.execute(
            text(
                "INSERT INTO learning_metrics (scope_type, scope_id, dimension, key, shown,"
                " positive, negative, dismissed) VALUES (1, 0, 4, 'ghost-rule', 3, 1, 0, 0)"
            )
        )
    broken = run("validate", database_url=database_url)
    assert broken.returncode == 1
    assert "ghost-rule" in broken.stdout
    repaired = run("validate", "--repair", database_url=database_url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert run("validate", database_url=database_url).returncode == 0
