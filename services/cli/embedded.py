"""The embedded default: PostgreSQL from the pgserver wheel, and tokens kept in the state dir."""

from __future__ import annotations

import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.auth import TokenRegistry, generate_tokens, parse_tokens

DATABASE_NAME = "reviewlearn"


def state_dir() -> Path:
    """``./.reviewlearn`` unless ``REVIEWLEARN_STATE_DIR`` says otherwise; created on demand."""
    path = Path(os.environ.get("REVIEWLEARN_STATE_DIR", ".reviewlearn")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, listening on a Unix socket in its data dir."""

    data_dir: Path
    _server: Any = None

    def start(self) -> str:
        """Starts the server (or attaches to one already running there); returns an asyncpg URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as in containers and CI.
            warnings.simplefilter("ignore")
            import pgserver

        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            self.data_dir, cleanup_mode="stop"
        )
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={self.data_dir}"

    def stop(self) -> None:
        """Stops the server (pgserver's "stop" mode stops it when its last handle closes)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def load_or_create_tokens(directory: Path) -> tuple[TokenRegistry, bool]:
    """``REVIEWLEARN_TOKENS`` if set, else the tokens saved in the state dir, else new ones.

    Returns the registry and whether it was created now (so the caller prints it).
    """
    from_env = os.environ.get("REVIEWLEARN_TOKENS", "").strip()
    if from_env:
        return parse_tokens(from_env), False
    token_file = directory / "tokens"
    if token_file.exists():
        return parse_tokens(token_file.read_text().strip()), False
    tokens = generate_tokens()
    token_file.touch(mode=0o600)
    token_file.write_text(tokens.as_env() + "\n")
    return tokens, True


def load_or_create_page_token_key(directory: Path) -> str:
    """``REVIEWLEARN_PAGE_TOKEN_KEY`` if set, else the key saved in the state dir, else a new one.

    Saved so that page tokens stay valid across restarts of ``reviewlearn up``; every service it
    starts gets the same key.
    """
    from_env = os.environ.get("REVIEWLEARN_PAGE_TOKEN_KEY", "").strip()
    if from_env:
        return from_env
    key_file = directory / "page-token-key"
    if key_file.exists():
        return key_file.read_text().strip()
    key = secrets.token_urlsafe(32)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key
