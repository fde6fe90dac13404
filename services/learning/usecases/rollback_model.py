"""RollbackModel: make an earlier fitted model the active one again."""

from __future__ import annotations

from typing import Protocol

from services.learning.storage.model_repository import StoredModel
from services.learning.storage.transactions import Transaction
from shared.errors import FailedPrecondition, NotFound


class ModelStore(Protocol):
    async def models(self) -> list[StoredModel]: ...
    async def activate(self, version: str) -> bool: ...


class StateRefresher(Protocol):
    async def refresh(self) -> object: ...


class RollbackModel:
    def __init__(self, *, transaction: Transaction[ModelStore], state: StateRefresher) -> None:
        self._transaction = transaction
        self._state = state

    async def rollback(self, *, version: str | None) -> tuple[str, str]:
        """(now active, previously active): ``version``, or the model fitted before the active
        one."""
        async with self._transaction() as store:
            models = await store.models()
            active = next((m.version for m in models if m.active), "")
            if version is None:
                position = next((i for i, m in enumerate(models) if m.active), None)
                earlier = models[position + 1 :] if position is not None else []
                if not earlier:
                    raise FailedPrecondition(
                        "there is no earlier model to roll back to", reason="NO_EARLIER_MODEL"
                    )
                version = earlier[0].version
            if not await store.activate(version):
                raise NotFound(f"no kept model {version!r}", reason="MODEL_NOT_FOUND")
        # Reads and rankings right after this call see the new model.
        await self._state.refresh()
        return version, active
