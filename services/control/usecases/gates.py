"""Use cases of the gates: set or clear a gate, engage or release the kill switch.

Each runs in one transaction that locks the gate state row (so versions increase one change at a
time), claims the request id (``shared.idempotency``: a retry gets the first answer, a reused id
with other content is REQUEST_ID_REUSED), applies the change, bumps the version, NOTIFYs replicas
(delivered at commit) and writes the audit row. After the commit the change is
also published on Redis (when configured) and applied by this replica's own gate client, so its
next EvaluateFeature already answers from the new version.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from services.control.domain.changes import Action, GateChange, GateClear, KillSwitchChange
from shared.gates.model import Feature, KillSwitch, Switch
from shared.idempotency import IdempotentRequest, request_digest


class GateRepository(Protocol):
    async def lock(self) -> tuple[int, KillSwitch]:
        """The version and kill switch, locked until the transaction ends."""
        ...

    async def switch(self, feature: Feature, repository_url: str) -> Switch | None: ...
    async def put_switch(self, feature: Feature, repository_url: str, switch: Switch) -> None: ...
    async def delete_switch(self, feature: Feature, repository_url: str) -> bool: ...
    async def set_kill_switch(self, *, engaged: bool, reason: str, actor: str) -> None: ...
    async def bump_version(self) -> int:
        """The new version; replicas are notified when the transaction commits."""
        ...


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str
    request_id: str | None
    feature: Feature | None = None
    repository_url: str = ""


class AuditRepository(Protocol):
    async def record(self, entry: AuditEntry) -> None: ...


class RequestRepository(Protocol):
    """``shared.idempotency.RequestLedger``."""

    async def claim(self, request: IdempotentRequest) -> bytes | None: ...
    async def answer(self, request: IdempotentRequest, response: bytes) -> None: ...


class GateUnit(Protocol):
    """One transaction's repositories."""

    @property
    def gates(self) -> GateRepository: ...
    @property
    def audit(self) -> AuditRepository: ...
    @property
    def requests(self) -> RequestRepository: ...


def keyed(
    action: str, actor: str, request_id: str | None, content: Mapping[str, Any]
) -> IdempotentRequest | None:
    """The idempotency key of a mutation; None when the caller sent no request id."""
    if not request_id:
        return None
    return IdempotentRequest(
        service="control",
        method=action,
        caller=actor,
        request_id=request_id,
        digest=request_digest(content),
    )


async def first_answer(
    requests: RequestRepository, key: IdempotentRequest | None
) -> Mapping[str, Any] | None:
    """The first answer to this request id, or None when this call is the first. Runs after the
    gate lock, so a concurrent retry finds the first call committed (or rolled back)."""
    if key is None:
        return None
    stored = await requests.claim(key)
    return json.loads(stored) if stored is not None else None


async def remember(
    requests: RequestRepository, key: IdempotentRequest | None, response: Mapping[str, Any]
) -> None:
    if key is not None:
        await requests.answer(key, json.dumps(response).encode())


Transactions = Callable[[], AbstractAsyncContextManager[GateUnit]]
AfterCommit = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class GateResult:
    feature: Feature
    repository_url: str
    switch: Switch
    version: int
    replayed: bool = False


@dataclass(frozen=True)
class ClearResult:
    cleared: bool
    version: int
    replayed: bool = False


@dataclass(frozen=True)
class KillSwitchResult:
    engaged: bool
    version: int
    replayed: bool = False


def _switch_json(switch: Switch | None) -> dict[str, Any] | None:
    if switch is None:
        return None
    return {"enabled": switch.enabled, "reason": switch.reason, "updated_by": switch.updated_by}


def _target(feature: Feature, url: str) -> str:
    return f"{feature}@{url}" if url else f"{feature}@global"


class GateCommands:
    def __init__(self, *, transactions: Transactions, after_commit: AfterCommit) -> None:
        self._transactions = transactions
        self._after_commit = after_commit

    async def set_gate(self, change: GateChange, *, actor: str) -> GateResult:
        content = {
            "feature": str(change.feature),
            "repository_url": change.repository_url,
            "enabled": change.enabled,
            "reason": change.reason,
        }
        key = keyed(Action.SET_GATE, actor, change.request_id, content)
        async with self._transactions() as unit:
            await unit.gates.lock()
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return GateResult(
                    change.feature,
                    change.repository_url,
                    Switch(bool(stored["enabled"]), change.reason, actor),
                    int(stored["version"]),
                    replayed=True,
                )
            before = await unit.gates.switch(change.feature, change.repository_url)
            switch = Switch(change.enabled, change.reason, actor)
            await unit.gates.put_switch(change.feature, change.repository_url, switch)
            version = await unit.gates.bump_version()
            response = {"enabled": change.enabled, "version": version}
            await remember(unit.requests, key, response)
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.SET_GATE,
                    target=_target(change.feature, change.repository_url),
                    before=_switch_json(before),
                    after=_switch_json(switch),
                    reason=change.reason,
                    request_id=change.request_id,
                    feature=change.feature,
                    repository_url=change.repository_url,
                )
            )
        await self._after_commit(version)
        return GateResult(change.feature, change.repository_url, switch, version)

    async def clear_gate(self, clear: GateClear, *, actor: str) -> ClearResult:
        content = {
            "feature": str(clear.feature),
            "repository_url": clear.repository_url,
            "reason": clear.reason,
        }
        key = keyed(Action.CLEAR_GATE, actor, clear.request_id, content)
        async with self._transactions() as unit:
            version, _ = await unit.gates.lock()
            stored = await first_answer(unit.requests, key)
            if stored is not None:
                return ClearResult(bool(stored["cleared"]), int(stored["version"]), replayed=True)
            before = await unit.gates.switch(clear.feature, clear.repository_url)
            cleared = await unit.gates.delete_switch(clear.feature, clear.repository_url)
            if cleared:
                version = await unit.gates.bump_version()
            response = {"cleared": cleared, "version": version}
            await remember(unit.requests, key, response)
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.CLEAR_GATE,
                    target=_target(clear.feature, clear.repository_url),
                    before=_switch_json(before),
                    after=None,
                    reason=clear.reason,
                    request_id=clear.request_id,
                    feature=clear.feature,
                    repository_url=clear.repository_url,
                )
            )
        if cleared:
            await self._after_commit(version)
        return ClearResult(cleared, version)

    async def set_kill_switch(self, change: KillSwitchChange, *, actor: str) -> KillSwitchResult:
        async with self._transactions() as unit:
            result = await switch_kill_switch(unit, change, actor=actor)
        if not result.replayed:
            await self._after_commit(result.version)
        return result


async def switch_kill_switch(
    unit: GateUnit, change: KillSwitchChange, *, actor: str
) -> KillSwitchResult:
    """Engages or releases the kill switch in the caller's transaction (SetKillSwitch's, or an
    alert evaluation's when a safeguard engages it); the caller announces the version after the
    commit unless the answer is a replay."""
    content = {"engaged": change.engaged, "reason": change.reason}
    key = keyed(Action.SET_KILL_SWITCH, actor, change.request_id, content)
    _, before = await unit.gates.lock()
    stored = await first_answer(unit.requests, key)
    if stored is not None:
        return KillSwitchResult(bool(stored["engaged"]), int(stored["version"]), replayed=True)
    await unit.gates.set_kill_switch(engaged=change.engaged, reason=change.reason, actor=actor)
    version = await unit.gates.bump_version()
    await remember(unit.requests, key, {"engaged": change.engaged, "version": version})
    await unit.audit.record(
        AuditEntry(
            actor=actor,
            action=Action.SET_KILL_SWITCH,
            target="kill_switch",
            before={k: v for k, v in asdict(before).items() if k != "updated_at"},
            after={"engaged": change.engaged, "reason": change.reason, "updated_by": actor},
            reason=change.reason,
            request_id=change.request_id,
            feature=Feature.LEARNING,
        )
    )
    return KillSwitchResult(change.engaged, version)
