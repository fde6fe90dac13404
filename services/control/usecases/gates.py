"""Use cases of the gates: set or clear a gate, engage or release the kill switch.

Each runs in one transaction that locks the gate state row (so versions increase one change at a
time), checks the request id against the audit log, applies the change, bumps the version,
NOTIFYs replicas (delivered at commit) and writes the audit row. After the commit the change is
also published on Redis (when configured) and applied by this replica's own gate client, so its
next EvaluateFeature already answers from the new version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from services.control.domain.changes import (
    Action,
    GateChange,
    GateClear,
    KillSwitchChange,
    StoredAnswer,
    replay,
    request_digest,
)
from shared.gates.model import Feature, KillSwitch, Switch


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
    request_digest: str | None
    response: Mapping[str, Any]
    feature: Feature | None = None
    repository_url: str = ""


class AuditRepository(Protocol):
    async def stored_answer(self, actor: str, request_id: str) -> StoredAnswer | None: ...
    async def record(self, entry: AuditEntry) -> None: ...


class GateUnit(Protocol):
    """One transaction's repositories."""

    @property
    def gates(self) -> GateRepository: ...
    @property
    def audit(self) -> AuditRepository: ...


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
        digest = request_digest(Action.SET_GATE, content)
        async with self._transactions() as unit:
            await unit.gates.lock()
            stored = await stored_answer(
                unit.audit, actor, change.request_id, Action.SET_GATE, digest
            )
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
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.SET_GATE,
                    target=_target(change.feature, change.repository_url),
                    before=_switch_json(before),
                    after=_switch_json(switch),
                    reason=change.reason,
                    request_id=change.request_id,
                    request_digest=digest,
                    response=response,
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
        digest = request_digest(Action.CLEAR_GATE, content)
        async with self._transactions() as unit:
            version, _ = await unit.gates.lock()
            stored = await stored_answer(
                unit.audit, actor, clear.request_id, Action.CLEAR_GATE, digest
            )
            if stored is not None:
                return ClearResult(bool(stored["cleared"]), int(stored["version"]), replayed=True)
            before = await unit.gates.switch(clear.feature, clear.repository_url)
            cleared = await unit.gates.delete_switch(clear.feature, clear.repository_url)
            if cleared:
                version = await unit.gates.bump_version()
            response = {"cleared": cleared, "version": version}
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.CLEAR_GATE,
                    target=_target(clear.feature, clear.repository_url),
                    before=_switch_json(before),
                    after=None,
                    reason=clear.reason,
                    request_id=clear.request_id,
                    request_digest=digest,
                    response=response,
                    feature=clear.feature,
                    repository_url=clear.repository_url,
                )
            )
        if cleared:
            await self._after_commit(version)
        return ClearResult(cleared, version)

    async def set_kill_switch(self, change: KillSwitchChange, *, actor: str) -> KillSwitchResult:
        content = {"engaged": change.engaged, "reason": change.reason}
        digest = request_digest(Action.SET_KILL_SWITCH, content)
        async with self._transactions() as unit:
            _, before = await unit.gates.lock()
            stored = await stored_answer(
                unit.audit, actor, change.request_id, Action.SET_KILL_SWITCH, digest
            )
            if stored is not None:
                return KillSwitchResult(
                    bool(stored["engaged"]), int(stored["version"]), replayed=True
                )
            await unit.gates.set_kill_switch(
                engaged=change.engaged, reason=change.reason, actor=actor
            )
            version = await unit.gates.bump_version()
            response = {"engaged": change.engaged, "version": version}
            await unit.audit.record(
                AuditEntry(
                    actor=actor,
                    action=Action.SET_KILL_SWITCH,
                    target="kill_switch",
                    before={k: v for k, v in asdict(before).items() if k != "updated_at"},
                    after={"engaged": change.engaged, "reason": change.reason, "updated_by": actor},
                    reason=change.reason,
                    request_id=change.request_id,
                    request_digest=digest,
                    response=response,
                    feature=Feature.LEARNING,
                )
            )
        await self._after_commit(version)
        return KillSwitchResult(change.engaged, version)


async def stored_answer(
    audit: AuditRepository, actor: str, request_id: str | None, action: str, digest: str
) -> Mapping[str, Any] | None:
    """The first answer to this request id, checked after the lock so a concurrent retry waits
    for the first to commit and then sees it."""
    if not request_id:
        return None
    stored = await audit.stored_answer(actor, request_id)
    if stored is None:
        return None
    return replay(stored, action=action, digest=digest, request_id=request_id)
