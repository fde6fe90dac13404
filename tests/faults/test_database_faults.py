"""PostgreSQL restarted under load, and a long-running transaction elsewhere in the cluster.

The cluster is the module's private one (never the machine's shared server): restarting it, or
holding its transaction horizon back, disturbs nobody else's tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from reviewlearn.control.v1 import control_pb2, control_pb2_grpc
from reviewlearn.learning.v1 import learning_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import auth
from tests.faults.conftest import (
    NOT_SERVING,
    RPC_TIMEOUT,
    SERVING,
    FeedbackLoad,
    Figure,
    HealthWatch,
    Readers,
    Stubs,
    account,
    folded,
    record_findings,
    report,
    until,
)
from tests.integration.scratch_cluster import ScratchCluster
from tests.system import System, fold_equals_recompute

pytestmark = pytest.mark.faults

DOWN_SECONDS = 3.0


async def test_postgres_restart_under_load_unavailable_never_internal(
    system: System, cluster: ScratchCluster, stubs: Stubs
) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository, team = f"https://git.example.com/pg-{suffix}/api", f"pg-{suffix}"
    figure = Figure(f"PostgreSQL restart under load ({DOWN_SECONDS:.0f} s down)")
    ids = await record_findings(stubs, repository, team, 1500, figure.errors)
    pids = {name: service.pid for name, service in system.services.items()}
    load = FeedbackLoad(stubs, f"pg-{suffix}", ids)
    readers = Readers(stubs, repository, team)
    watch = HealthWatch(system)
    running = [asyncio.ensure_future(t.run()) for t in (load, readers, watch)]
    await until(lambda: len(load.acknowledged) >= 100, what="the load started")
    await asyncio.to_thread(cluster.stop, "fast")
    await asyncio.sleep(DOWN_SECONDS)
    acknowledged_while_down = len(load.acknowledged)
    await asyncio.to_thread(cluster.start)
    up_at = time.monotonic()
    await until(
        lambda: (
            len(load.acknowledged) > acknowledged_while_down
            and all(seen[-1] == SERVING for seen in watch.seen.values())
        ),
        what="writes succeed again and every service says SERVING",
    )
    figure.recover_seconds = time.monotonic() - up_at
    await until(lambda: len(load.acknowledged) >= min(len(ids), acknowledged_while_down + 100))
    for task in (load, readers, watch):
        task.stop.set()
    await asyncio.gather(*running)

    await account(figure, system, repository, sent=load.sent, acknowledged=set(load.acknowledged))
    figure.errors.update(load.errors)
    figure.errors.update(readers.errors)
    metric = await folded(stubs, repository, len(load.acknowledged))
    checked = fold_equals_recompute(system)
    names = {SERVING: "SERVING", NOT_SERVING: "NOT_SERVING", -1: "no answer"}
    transitions = "; ".join(
        f"{name}: {' → '.join(names.get(s, str(s)) for s in seen)}"
        for name, seen in watch.seen.items()
    )
    figure.note = f"health {transitions}; fold = recompute: {checked.returncode == 0}"
    report(figure)

    assert "INTERNAL" not in figure.errors
    assert set(figure.errors) <= {"UNAVAILABLE"}, figure.errors
    assert figure.errors["UNAVAILABLE"] > 0  # the outage was seen
    assert figure.lost == figure.doubled == 0
    assert set(load.acknowledged) == load.sent
    for name, seen in watch.seen.items():
        assert NOT_SERVING in seen, (name, seen)
        assert seen[-1] == SERVING, (name, seen)
        assert seen.index(NOT_SERVING) < len(seen) - 1, (name, seen)
    # Recovered without a restart: the very same processes.
    assert {name: service.pid for name, service in system.services.items()} == pids
    assert metric.positive == len(load.applied)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_long_transaction_elsewhere_holds_the_watermark_and_nothing_stalls(
    system: System, cluster: ScratchCluster, stubs: Stubs
) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository, team = f"https://git.example.com/ltx-{suffix}/api", f"ltx-{suffix}"
    figure = Figure("long-running transaction elsewhere (held 5 s)")
    ids = await record_findings(stubs, repository, team, 300, figure.errors)

    async def learning_state() -> learning_pb2.GetLearningMetricsResponse:
        return await stubs.learning.GetLearningMetrics(
            learning_pb2.GetLearningMetricsRequest(dimension=learning_pb2.DIMENSION_ALL),
            metadata=auth("reader"),
            timeout=RPC_TIMEOUT,
        )

    engine = create_async_engine(cluster.url, poolclass=NullPool)
    backlogs: list[int] = []
    try:
        async with engine.connect() as elsewhere:
            transaction = await elsewhere.begin()
            # A transaction id of its own, kept open: the cluster-wide horizon cannot pass it.
            held = int((await elsewhere.execute(text("SELECT txid_current()"))).scalar_one())
            load = FeedbackLoad(stubs, f"ltx-{suffix}", ids)
            readers = Readers(stubs, repository, team)
            running = [asyncio.ensure_future(t.run()) for t in (load, readers)]
            opened = time.monotonic()
            while time.monotonic() - opened < 5.0:
                backlogs.append((await learning_state()).backlog)
                await asyncio.sleep(0.25)
            load.stop.set()
            await asyncio.gather(running[0])
            # Nothing stalled: every acknowledged event is folded while the transaction is open.
            metric = await folded(stubs, repository, len(load.acknowledged))
            during = await learning_state()
            readers.stop.set()
            await asyncio.gather(running[1])
            await transaction.commit()
        committed = time.monotonic()
        deadline = time.monotonic() + 60
        while (after := await learning_state()).watermark <= held:
            assert time.monotonic() < deadline, "the watermark never passed the transaction"
            await asyncio.sleep(0.1)
        figure.recover_seconds = time.monotonic() - committed
    finally:
        await engine.dispose()

    await account(figure, system, repository, sent=load.sent, acknowledged=set(load.acknowledged))
    figure.errors.update(load.errors)
    figure.errors.update(readers.errors)
    figure.note = (
        f"watermark held at {during.watermark} ≤ txid {held} while open, then {after.watermark}; "
        f"backlog peak {max(backlogs)} (the fold keeps folding every visible row); "
        f"{readers.answered} reads answered; recover = commit to watermark past it"
    )
    report(figure)

    assert during.watermark <= held < after.watermark
    assert metric.positive == len(load.applied)
    assert figure.errors == {}
    assert figure.lost == figure.doubled == 0


HELD_RULE = "ReviewlearnFoldHorizonHeld"


async def test_long_transaction_fires_the_learning_backlog_alert(
    system: System, cluster: ScratchCluster, stubs: Stubs
) -> None:
    """While a transaction elsewhere holds the horizon back and feedback keeps arriving, the
    alert on the held fold watermark fires; after the commit it resolves. (The backlog itself
    does not grow: the fold folds every visible row — the other long-transaction test.)"""
    suffix = uuid.uuid4().hex[:8]
    repository, team = f"https://git.example.com/alert-{suffix}/api", f"alert-{suffix}"
    figure = Figure(f"long transaction → {HELD_RULE} (threshold 1 s)")
    ids = await record_findings(stubs, repository, team, 300, figure.errors)
    engine = create_async_engine(cluster.url, poolclass=NullPool)
    async with grpc.aio.insecure_channel(system.address("control")) as channel:
        control: control_pb2_grpc.ControlServiceAsyncStub = control_pb2_grpc.ControlServiceStub(
            channel
        )
        # The seeded rule waits 300 s; the same rule with a 1 s threshold, no keep_firing_for.
        rules = await control.ListAlertRules(
            control_pb2.ListAlertRulesRequest(), metadata=auth("operator")
        )
        rule = next(r for r in rules.rules if r.name == HELD_RULE)
        rule.threshold = 1.0
        rule.keep_firing_for.Clear()
        await control.UpsertAlertRule(
            control_pb2.UpsertAlertRuleRequest(request_id=f"held-{suffix}", rule=rule),
            metadata=auth("operator"),
        )

        async def held_alert() -> tuple[bool, float]:
            evaluated = await control.EvaluateAlerts(
                control_pb2.EvaluateAlertsRequest(), metadata=auth("operator"), timeout=RPC_TIMEOUT
            )
            value = next(
                (s.value for s in evaluated.signals if s.name == "fold_horizon_held_seconds"), -1
            )
            active = await control.ListActiveAlerts(
                control_pb2.ListActiveAlertsRequest(),
                metadata=auth("operator"),
                timeout=RPC_TIMEOUT,
            )
            firing = any(
                a.rule_name == HELD_RULE and a.state == control_pb2.ALERT_STATE_FIRING
                for a in active.alerts
            )
            return firing, value

        async def until_alert(firing: bool, what: str) -> float:
            """Evaluates until the alert is firing (or is not); the signal's value then."""
            deadline = time.monotonic() + 60
            while (seen := await held_alert())[0] is not firing:
                assert time.monotonic() < deadline, f"{HELD_RULE} {what}: {seen}"
                await asyncio.sleep(0.25)
            return seen[1]

        try:
            # The last heartbeat sample may still hold an earlier test's transaction (samples
            # lag up to 15 s): the firing seen below must be this transaction's.
            await until_alert(False, "kept firing from a transaction before this test")
            async with engine.connect() as elsewhere:
                transaction = await elsewhere.begin()
                await elsewhere.execute(text("SELECT txid_current()"))
                opened = time.monotonic()
                load = FeedbackLoad(stubs, f"alert-{suffix}", ids)
                running = asyncio.ensure_future(load.run())
                peak = await until_alert(True, "never fired")
                fire_seconds = time.monotonic() - opened
                load.stop.set()
                await running
                await transaction.commit()
            committed = time.monotonic()
            await until_alert(False, "never resolved")
            figure.recover_seconds = time.monotonic() - committed
        finally:
            await engine.dispose()

    await account(figure, system, repository, sent=load.sent, acknowledged=set(load.acknowledged))
    figure.errors.update(load.errors)
    metric = await folded(stubs, repository, len(load.acknowledged))
    figure.note = (
        f"fired {fire_seconds:.1f} s after the transaction opened (held {peak:.1f} s when seen; "
        f"heartbeat samples every 15 s); recover = commit to resolved"
    )
    report(figure)

    assert figure.errors == {}
    assert figure.lost == figure.doubled == 0
    assert metric.positive == len(load.applied)
