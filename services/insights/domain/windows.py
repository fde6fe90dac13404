"""Which period a request asks about: defaults, and the limits a window must respect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from shared.errors import Violations


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC; rollups are daily, so it covers the days it touches."""

    start: datetime
    end: datetime

    @property
    def first_day(self) -> date:
        return self.start.astimezone(UTC).date()

    @property
    def last_day(self) -> date:
        """The last day included (the day of ``end``, unless ``end`` is exactly midnight)."""
        end = self.end.astimezone(UTC)
        day = end.date()
        if end == datetime(day.year, day.month, day.day, tzinfo=UTC) and day > self.first_day:
            return day - timedelta(days=1)
        return day


def window(
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    default_days: int,
    retention_days: int,
    violations: Violations,
    start_field: str = "start_time",
    end_field: str = "end_time",
) -> Window:
    """The requested window, or the last ``default_days`` before ``end``; bad bounds are added
    to ``violations`` (the caller raises them all at once)."""
    end = end or now
    start = start or end - timedelta(days=default_days)
    oldest = now - timedelta(days=retention_days)
    if end <= start:
        violations.add(end_field, "must be after start_time")
    if start < oldest:
        violations.add(
            start_field, f"is more than the retention of {retention_days} days in the past"
        )
    if end > now + timedelta(days=1):
        violations.add(end_field, "is in the future")
    return Window(start, end)


def week_start(day: date) -> date:
    """The Monday of the ISO week a day falls in."""
    return day - timedelta(days=day.weekday())
