"""The gate client every service runs: an in-memory snapshot, pushed changes, a polling fallback.

Evaluation (``evaluate``, ``require``) reads only the snapshot in memory — no I/O on the request
path. The snapshot is replaced whole when a newer version is read from PostgreSQL, which happens

- at once when the control service announces a version: PostgreSQL ``NOTIFY`` on
  ``reviewlearn_gates`` (sent in the changing transaction, so it arrives after the commit), or
  Redis pub/sub on the same channel when ``REVIEWLEARN_REDIS_URL`` is set (no LISTEN connection
  per replica, which PgBouncer in transaction mode cannot carry);
- at the latest after ``gate_poll_seconds``: a one-row version check catches up a replica that
  missed a notification (listener reconnecting, Redis down).

When the database or the control plane is unreachable the replica keeps its last snapshot and
reports itself stale (health, heartbeat); it never falls back to defaults. Only a replica that has
read no snapshot at all since it started decides "off" (``not_loaded``) — the safe side: learning
passes findings through, insights answer UNAVAILABLE, feedback is recorded regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import errors
from shared.gates.model import (
    DecidedBy,
    Feature,
    GateDecision,
    GateSnapshot,
    evaluate,
    not_loaded,
)
from shared.gates.store import CHANNEL, load_snapshot, stored_version
from shared.notifications import ChannelListener
from shared.periodic import Periodic
from shared.redis_namespace import RedisSettings, RedisTarget

log = logging.getLogger("reviewlearn.gates")

FIRST_LOAD_TIMEOUT_SECONDS = 3.0
REFRESH_TIMEOUT_SECONDS = 5.0
MEMO_LIMIT = 100_000
EXPOSURE_MEMORY_LIMIT = 200_000


class GateSettings(RedisSettings, Protocol):
    """The fields of ``shared.settings.ServiceSettings`` the client reads."""

    learning_enabled: bool
    gate_poll_seconds: float
    gate_stale_seconds: float


class GateClient:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        hard_kill: bool,
        redis: RedisTarget | None = None,
        poll_seconds: float = 5.0,
        stale_seconds: float = 15.0,
    ) -> None:
        self._engine = engine
        self._hard_kill = hard_kill
        self._redis = redis
        self._stale_seconds = stale_seconds
        self._snapshot: GateSnapshot | None = None
        self._applied_at: datetime | None = None
        self._last_success = 0.0
        self._last_error: str | None = None
        self._announced = -1
        self._memo: dict[tuple[Feature, str], GateDecision] = {}
        self._exposed: set[str] = set()
        self._exposures: list[tuple[str, int]] = []
        self._on_applied: list[Callable[[GateSnapshot], None]] = []
        self._changed = asyncio.Condition()
        self._refresh_lock = asyncio.Lock()
        self._poll = Periodic("gates-refresh", self._tick, interval=poll_seconds)
        self._listener = ChannelListener(
            database_url=engine.url.render_as_string(hide_password=False),
            redis=redis,
            channels=[CHANNEL],
            on_notify=self._on_notify,
            name="gates-listener",
        )
        # Propagation on a dashboard: every replica's version should reach the newest one.
        meter = metrics.get_meter("reviewlearn.gates")
        meter.create_observable_gauge(
            "gate_snapshot_version",
            callbacks=[lambda _: [metrics.Observation(self.applied_version)]],
            description="Version of the gate snapshot in force in this replica (-1: none yet)",
        )
        meter.create_observable_gauge(
            "gate_snapshot_stale",
            callbacks=[lambda _: [metrics.Observation(1 if self.stale else 0)]],
            description="1 while this replica cannot confirm its gate snapshot is current",
        )

    @classmethod
    def from_settings(cls, settings: GateSettings, *, engine: AsyncEngine) -> GateClient:
        """The one factory: what ``ServiceRuntime`` builds for every service by default."""
        return cls(
            engine=engine,
            hard_kill=not settings.learning_enabled,
            redis=RedisTarget.of(settings),
            poll_seconds=settings.gate_poll_seconds,
            stale_seconds=settings.gate_stale_seconds,
        )

    # ------------------------------------------------------------------ evaluation (no I/O)

    def evaluate(self, feature: Feature, repository_url: str = "") -> GateDecision:
        """Whether ``feature`` is on for the repository (empty: no repository), and why."""
        key = (feature, repository_url)
        decision = self._memo.get(key)
        if decision is not None:
            return decision
        snapshot = self._snapshot
        if snapshot is None:
            return not_loaded(feature)
        decision = evaluate(snapshot, feature, repository_url, hard_kill=self._hard_kill)
        if (
            decision.enabled
            and decision.decided_by is DecidedBy.ROLLOUT
            and repository_url not in self._exposed
        ):
            self._record_exposure(repository_url, snapshot.rollout.phase)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = decision
        return decision

    def explain(self, feature: Feature, repository_url: str = "") -> GateDecision:
        """The same decision for an operator's question: not memoised, not an exposure."""
        snapshot = self._snapshot
        if snapshot is None:
            return not_loaded(feature)
        return evaluate(snapshot, feature, repository_url, hard_kill=self._hard_kill)

    def is_enabled(self, feature: Feature, repository_url: str = "") -> bool:
        return self.evaluate(feature, repository_url).enabled

    def require(self, feature: Feature, repository_url: str = "") -> GateDecision:
        """The decision, or ``Unavailable`` naming the switch when the feature is off."""
        decision = self.evaluate(feature, repository_url)
        if not decision.enabled:
            raise errors.Unavailable(
                f"{feature} is off: {decision.reason}",
                reason="FEATURE_DISABLED",
                metadata={
                    "feature": str(feature),
                    "decided_by": str(decision.decided_by),
                    "gate_version": str(decision.version),
                },
            )
        return decision

    # ------------------------------------------------------------------ state

    @property
    def snapshot(self) -> GateSnapshot | None:
        return self._snapshot

    @property
    def applied_version(self) -> int:
        """The version in force here; -1 before the first snapshot."""
        return self._snapshot.version if self._snapshot is not None else -1

    @property
    def hard_kill(self) -> bool:
        return self._hard_kill

    @property
    def applied_at(self) -> datetime | None:
        return self._applied_at

    @property
    def stale(self) -> bool:
        """True while this replica cannot confirm its snapshot is current."""
        if self._snapshot is None or self._last_error is not None:
            return True
        return time.monotonic() - self._last_success > self._stale_seconds

    @property
    def refreshed_at(self) -> datetime | None:
        """Wall time of the last successful check against the database."""
        if not self._last_success:
            return None
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self._last_success)

    def status(self) -> dict[str, Any]:
        """For health reports."""
        report: dict[str, Any] = {
            "version": self.applied_version,
            "stale": self.stale,
            "push": "redis" if self._redis is not None else "postgres",
            "push_connected": self._listener.connected.is_set(),
            "hard_kill": self._hard_kill,
        }
        if self._snapshot is not None:
            report["kill_switch_engaged"] = self._snapshot.kill_switch.engaged
        refreshed = self.refreshed_at
        if refreshed is not None:
            report["refreshed_at"] = refreshed.isoformat()
        if self._last_error is not None:
            report["error"] = self._last_error
        return report

    def on_applied(self, callback: Callable[[GateSnapshot], None]) -> None:
        """Called (synchronously, on the event loop) after each newly applied snapshot."""
        self._on_applied.append(callback)

    def take_exposures(self) -> list[tuple[str, int]]:
        """Repositories first seen in the rollout here since the last call, with the phase."""
        taken, self._exposures = self._exposures, []
        return taken

    def return_exposures(self, exposures: list[tuple[str, int]]) -> None:
        """Puts back exposures that could not be stored, for the next attempt."""
        self._exposures[:0] = exposures

    async def watch(self) -> AsyncIterator[GateSnapshot]:
        """The current snapshot, then each newly applied one (a burst may coalesce)."""
        delivered = -2
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._differs_from, delivered))
                snapshot = self._snapshot
            assert snapshot is not None
            delivered = snapshot.version
            yield snapshot

    def _differs_from(self, version: int) -> bool:
        return self._snapshot is not None and self._snapshot.version != version

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # One attempt before serving, so a healthy start answers from real gates at once; a
        # database that is down must not keep the service from starting (it retries by polling).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_LOAD_TIMEOUT_SECONDS):
                await self.refresh()
        await self._poll.start()
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
        await self._poll.stop()

    async def refresh(self, *, at_least: int | None = None) -> bool:
        """Reads the snapshot if the stored version differs; True when a new one was applied.

        ``at_least``: a version known to exist (announced): read the snapshot straight away
        unless it is already applied, skipping the version check. Failures are recorded (the
        replica turns stale) and swallowed: the snapshot stays.
        """
        async with self._refresh_lock:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                    if at_least is not None and self.applied_version >= at_least:
                        return False  # another refresh applied it while this one waited
                    if at_least is None and self._snapshot is not None:
                        stored = await stored_version(self._engine)
                        if stored == self._snapshot.version:
                            self._succeeded()
                            return False
                    snapshot = await load_snapshot(self._engine)
            except Exception as exc:
                if self._last_error is None:
                    log.warning(
                        "cannot refresh gates; keeping version %s: %s", self.applied_version, exc
                    )
                # Only the kind of failure: health reports are open, and a driver's message
                # names the database host and port (the log above has the details).
                self._last_error = exc.__class__.__name__
                return False
            self._succeeded()
            if self._snapshot is not None and snapshot.version == self._snapshot.version:
                return False
            await self._apply(snapshot)
            return True

    def announce(self, version: int) -> None:
        """A notification said ``version`` exists: fetch it now unless it is already here."""
        if version > self.applied_version:
            self._announced = max(self._announced, version)
            self._poll.wake()

    # ------------------------------------------------------------------ internals

    def _succeeded(self) -> None:
        if self._last_error is not None:
            log.info("gates reachable again (version %s)", self.applied_version)
        self._last_error = None
        self._last_success = time.monotonic()

    async def _apply(self, snapshot: GateSnapshot) -> None:
        self._snapshot = snapshot
        self._applied_at = datetime.now(UTC)
        self._memo = {}
        async with self._changed:
            self._changed.notify_all()
        for callback in self._on_applied:
            try:
                callback(snapshot)
            except Exception:
                log.exception("gate listener callback failed")

    async def _tick(self) -> None:
        announced = self._announced
        await self.refresh(at_least=announced if announced > self.applied_version else None)

    def _record_exposure(self, repository_url: str, phase: int) -> None:
        if len(self._exposed) >= EXPOSURE_MEMORY_LIMIT:
            self._exposed.clear()  # re-reporting is harmless: the ledger keeps the first
        self._exposed.add(repository_url)
        self._exposures.append((repository_url, phase))

    def _on_notify(self, channel: str, payload: str) -> None:
        try:
            version = int(payload)
        except ValueError:
            # Not a version: the listener (re)connected, or an unknown sender. Whatever changed
            # meanwhile is found by a version check.
            self._poll.wake()
            return
        self.announce(version)
