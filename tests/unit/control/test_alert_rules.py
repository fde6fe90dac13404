"""The alert state machine, rule validation, silences and the seeded catalogue (no I/O)."""

from __future__ import annotations

import importlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.control.domain.alert_catalogue import DEFAULT_RULES, SIGNAL_NAMES
from services.control.domain.alerts import (
    AlertRule,
    AlertState,
    Channel,
    NotificationKind,
    Severity,
    Silence,
    silenced,
    step,
    validate_rule,
)
from shared.errors import InvalidArgument

T0 = datetime(2026, 12, 1, tzinfo=UTC)
RULE = AlertRule(
    name="BacklogHigh",
    signal="feedback_backlog",
    comparison=">",
    threshold=1000,
    for_duration=timedelta(minutes=5),
    keep_firing_for=timedelta(minutes=2),
    repeat_interval=timedelta(hours=1),
    severity=Severity.CRITICAL,
    channels=(Channel.LOG,),
    labels={"team": "platform"},
)


def test_pending_then_firing_after_for_then_held_by_keep_firing_for_then_resolved() -> None:
    started = step(RULE, None, 5000, now=T0, is_silenced=False)
    assert started is not None
    assert (started.alert.state, started.previous, started.notify) == (
        AlertState.PENDING,
        None,
        None,
    )
    early = step(RULE, started.alert, 5000, now=T0 + timedelta(minutes=4), is_silenced=False)
    assert early is not None
    assert early.alert.state is AlertState.PENDING
    assert not early.changed
    fired = step(RULE, early.alert, 5000, now=T0 + timedelta(minutes=5), is_silenced=False)
    assert fired is not None
    assert (fired.alert.state, fired.notify) == (AlertState.FIRING, NotificationKind.FIRING)
    dipped = step(RULE, fired.alert, 10, now=T0 + timedelta(minutes=6), is_silenced=False)
    assert dipped is not None
    assert dipped.alert.state is AlertState.FIRING
    assert dipped.alert.cleared_since == T0 + timedelta(minutes=6)
    held = step(RULE, dipped.alert, None, now=T0 + timedelta(minutes=7), is_silenced=False)
    assert held is not None
    assert held.alert.state is AlertState.FIRING
    gone = step(RULE, held.alert, 10, now=T0 + timedelta(minutes=8), is_silenced=False)
    assert gone is not None
    assert (gone.alert.state, gone.notify) == (AlertState.RESOLVED, NotificationKind.RESOLVED)


def test_repeat_after_the_interval_and_nothing_while_silenced() -> None:
    rule = AlertRule(**{**RULE.__dict__, "for_duration": timedelta(0)})
    fired = step(rule, None, 5000, now=T0, is_silenced=False)
    assert fired is not None
    assert fired.notify is NotificationKind.FIRING
    quiet = step(rule, fired.alert, 5000, now=T0 + timedelta(minutes=59), is_silenced=False)
    assert quiet is not None
    assert quiet.notify is None
    again = step(rule, quiet.alert, 5000, now=T0 + timedelta(hours=1), is_silenced=False)
    assert again is not None
    assert again.notify is NotificationKind.REPEAT
    hushed = step(rule, again.alert, 5000, now=T0 + timedelta(hours=3), is_silenced=True)
    assert hushed is not None
    assert hushed.notify is None
    assert hushed.alert.silenced
    cleared = step(rule, hushed.alert, 1, now=T0 + timedelta(hours=4), is_silenced=True)
    later = step(
        rule, cleared.alert if cleared else None, 1, now=T0 + timedelta(hours=5), is_silenced=True
    )
    assert later is not None
    assert later.alert.state is AlertState.RESOLVED
    # Notified before the silence: the resolve still closes the incident that opened.
    assert later.notify is NotificationKind.RESOLVED
    never_told = step(rule, None, 5000, now=T0, is_silenced=True)
    assert never_told is not None
    assert never_told.notify is None
    quiet_end = step(rule, never_told.alert, 1, now=T0 + timedelta(hours=1), is_silenced=True)
    quieter = step(
        rule, quiet_end.alert if quiet_end else None, 1, now=T0 + timedelta(hours=2),
        is_silenced=True,
    )  # fmt: skip
    assert quieter is not None
    assert quieter.alert.state is AlertState.RESOLVED
    assert quieter.notify is None


def test_no_data_never_starts_an_alert() -> None:
    assert step(RULE, None, None, now=T0, is_silenced=False) is None
    assert step(RULE, None, math.nan, now=T0, is_silenced=False) is None


def test_validation_names_every_bad_field() -> None:
    bad = AlertRule(
        **{
            **RULE.__dict__,
            "signal": "nope",
            "threshold": math.inf,
            "for_duration": timedelta(seconds=-1),
            "channels": (),
        }
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_rule(bad, known_signals=SIGNAL_NAMES)
    fields = {v.field for v in caught.value.violations}
    assert fields == {"rule.signal", "rule.threshold", "rule.for_duration", "rule.channels"}


def test_silence_matchers() -> None:
    silence = Silence(
        1, (), {"team": "platform", "severity": "critical"}, T0, T0 + timedelta(hours=1), "op", ""
    )
    assert silenced(RULE, [silence], T0 + timedelta(minutes=1))
    assert not silenced(RULE, [silence], T0 + timedelta(hours=2))
    other = Silence(2, ("Other",), {}, T0, T0 + timedelta(hours=1), "op", "")
    assert not silenced(RULE, [other], T0)


SEEDING_MIGRATIONS = ("0009_alerting", "0010_fold_horizon_alert")


def test_the_migrations_seed_the_catalogue() -> None:
    """Every catalogue rule is seeded by exactly one migration, with the catalogue's values."""
    seeded: dict[str, tuple[Any, ...]] = {}
    channels_of: dict[str, Any] = {}
    for name in SEEDING_MIGRATIONS:
        migration = importlib.import_module(f"shared.db.migrations.versions.{name}")
        for row in migration.SEEDED_RULES:
            assert row[0] not in seeded, f"{row[0]} seeded twice"
            seeded[row[0]] = row
            channels_of[row[0]] = migration._channels
    assert set(seeded) == {rule.name for rule in DEFAULT_RULES}
    for rule in DEFAULT_RULES:
        validate_rule(rule, known_signals=SIGNAL_NAMES)
        _name, signal, cmp, threshold, for_s, keep, sev, repeat, guard, summary, desc = seeded[
            rule.name
        ]
        assert (signal, cmp, threshold, guard) == (
            rule.signal,
            rule.comparison,
            rule.threshold,
            rule.safeguard,
        )
        assert (for_s, keep, repeat) == (
            rule.for_duration.total_seconds(),
            rule.keep_firing_for.total_seconds(),
            rule.repeat_interval.total_seconds(),
        )
        assert (sev, summary, desc) == (
            int(rule.severity),
            rule.annotations["summary"],
            rule.description,
        )
        assert channels_of[rule.name](sev) == [str(c) for c in rule.channels]
