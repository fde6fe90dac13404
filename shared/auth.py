"""Bearer tokens bound to roles.

Roles are not a ladder: ``operator`` may call everything, ``ingest`` only the feedback-writing RPCs,
``reader`` only reads, ranking and insights. The role an RPC needs is declared in its proto
(``reviewlearn.common.v1.required_role``), so the contract says who may call what.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    INGEST = "ingest"
    READER = "reader"
    OPERATOR = "operator"


def role_allows(granted: Role, required: Role) -> bool:
    """Whether a token of role ``granted`` may call an RPC that requires ``required``."""
    return granted is Role.OPERATOR or granted is required


@dataclass(frozen=True)
class Principal:
    """Who is calling: the role and a short, loggable token id (never the token itself)."""

    role: Role
    token_id: str


class TokenRegistry:
    """Looks tokens up in constant time per candidate, so timing leaks nothing."""

    def __init__(self, tokens: dict[str, Role]) -> None:
        self._tokens = dict(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, token: str) -> Principal | None:
        found: Principal | None = None
        for candidate, role in self._tokens.items():
            if hmac.compare_digest(candidate.encode(), token.encode()):
                digest = hashlib.sha256(candidate.encode()).hexdigest()[:10]
                found = Principal(role=role, token_id=f"{role.value}:{digest}")
        return found

    def token_of(self, role: Role) -> str | None:
        """A token of the role (the first configured), for a service calling another."""
        return next((token for token, granted in self._tokens.items() if granted is role), None)

    def as_env(self) -> str:
        return ",".join(f"{role.value}={token}" for token, role in self._tokens.items())


def parse_tokens(spec: str) -> TokenRegistry:
    """Parses ``role=token,role=token``; a role may appear more than once (token rotation)."""
    tokens: dict[str, Role] = {}
    for raw_item in spec.split(","):
        item = raw_item.strip()
        if not item:
            continue
        role_name, sep, token = item.partition("=")
        if not sep or not token.strip():
            raise ValueError(f"token entry {item!r} is not of the form role=token")
        try:
            role = Role(role_name.strip().lower())
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {role_name!r} (allowed: {allowed})") from None
        tokens[token.strip()] = role
    return TokenRegistry(tokens)


def generate_tokens() -> TokenRegistry:
    """One fresh random token per role, for the embedded default."""
    return TokenRegistry({f"rl_{r.value}_{secrets.token_urlsafe(24)}": r for r in Role})
