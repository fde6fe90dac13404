"""A second, throwaway PostgreSQL cluster that a test may stop, restart and shut down at will.

Built with the Debian server packages' ``initdb`` and ``pg_ctl`` (what ``.ci/run`` starts the main
server with) on a free port and a private socket directory; run as the ``postgres`` system user
when the tests run as root, since PostgreSQL refuses to. Tests that need one skip when the
binaries are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port


def _bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class ScratchCluster:
    def __init__(self, *, max_connections: int = 20) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self._bin = bin_dir
        self._root = Path(tempfile.mkdtemp(prefix="rl-scratch-pg-"))
        self._data = self._root / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")
        self.port = free_port()
        self._max_connections = max_connections
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections={self._max_connections}"
        )
        self._ctl("start", "-w", "-l", str(self._root / "log"), "-o", options)

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """Stops the server, or waits for a shutdown under way to finish.

        ``smart`` without waiting leaves it refusing new connections (SQLSTATE 57P03, "the
        database system is shutting down") until its last session ends."""
        if self.running():
            # Not checked: a smart shutdown may finish between the status and the stop.
            subprocess.run(
                self._command("pg_ctl", "-D", str(self._data), "stop", "-m", mode, "-W"),
                capture_output=True,
                check=False,
            )
        deadline = time.monotonic() + 60
        while wait and self.running():
            if time.monotonic() > deadline:
                raise TimeoutError("the scratch cluster did not stop within a minute")
            time.sleep(0.05)

    def running(self) -> bool:
        status = subprocess.run(
            self._command("pg_ctl", "-D", str(self._data), "status"),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self._data), "stop", "-m", "immediate"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self._root, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self._data), *args)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(self._command(program, *args), capture_output=True, check=True, timeout=60)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self._bin / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command
