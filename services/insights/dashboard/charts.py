"""Geometry of the dashboard's inline SVG charts (pure: numbers in, coordinates out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    path: str
    """SVG path of the shown points (gaps where a week is withheld)."""
    dots: tuple[tuple[float, float, str], ...]
    """(x, y, label) of every shown point."""
    y_max: float
    y_min: float


def line_chart(
    values: Sequence[float | None],
    labels: Sequence[str],
    *,
    width: int = 240,
    height: int = 80,
    pad: int = 6,
    rate: bool = False,
) -> LineChart:
    """A polyline over equally spaced weeks; ``None`` values break the line.

    Rates are drawn on a fixed 0–1 axis (so a small wiggle does not look like a cliff);
    counts from 0 to their maximum.
    """
    shown = [v for v in values if v is not None]
    y_min = 0.0
    y_max = 1.0 if rate else max(shown, default=1.0) or 1.0
    n = len(values)

    def x_of(i: int) -> float:
        return pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)

    def y_of(v: float) -> float:
        return height - pad - (height - 2 * pad) * ((v - y_min) / (y_max - y_min))

    commands = []
    dots = []
    pen_down = False
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        if value is None:
            pen_down = False
            continue
        x, y = x_of(i), y_of(value)
        commands.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        dots.append((round(x, 1), round(y, 1), label))
        pen_down = True
    return LineChart(width, height, " ".join(commands), tuple(dots), y_max, y_min)


@dataclass(frozen=True)
class IntervalBar:
    """A bar from 0 to ``value`` with a whisker over [lower, upper], in percent of the width."""

    value: float
    lower: float
    upper: float
    zero: float


def interval_bar(
    value: float, lower: float, upper: float, *, low: float, high: float
) -> IntervalBar:
    span = (high - low) or 1.0

    def pct(v: float) -> float:
        return round(100.0 * (min(max(v, low), high) - low) / span, 2)

    return IntervalBar(pct(value), pct(lower), pct(upper), pct(0.0))
