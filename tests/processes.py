"""Child processes of a test run: free ports, programs that die with the test process, and a
private Redis server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

# Children die with the test process (PR_SET_PDEATHSIG, kept across exec). Set by a fresh
# interpreter that then execs the real program, not by a ``preexec_fn``: a service restarted
# mid-test is forked from a process whose gRPC threads hold locks, and Python code run between
# fork and exec there can crash the child (it did: SIGSEGV before exec).
_LAUNCHER = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def orphan_proof(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the test process dies, even by SIGKILL."""
    return [sys.executable, "-c", _LAUNCHER, *argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A private ``redis-server`` on a free port that a test may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self._binary = binary
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            orphan_proof(
                [
                    self._binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
            ),
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not accepts(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


@contextlib.contextmanager
def private_redis() -> Iterator[str | None]:
    """A throwaway Redis, or None (in-process caches, PostgreSQL NOTIFY) when there is none:
    a shared Redis would mix this database's cache keys and notifications with other runs'."""
    try:
        server = RedisServer()
    except FileNotFoundError:
        yield None
        return
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
