"""The Prometheus names the services export, read from the code that creates the instruments.

Every instrument is created by an OpenTelemetry meter call with a literal name
(``meter.create_histogram("api_response_time", unit="s")``); the Prometheus exporter names the
family after it: counters get ``_total``, a unit of seconds ``_seconds``, histograms export
``_bucket``, ``_sum`` and ``_count``. Reading the calls from the source (not a live scrape)
covers instruments that have not been recorded yet, which a scrape would not show.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CREATORS = {
    "create_counter": "counter",
    "create_observable_counter": "counter",
    "create_up_down_counter": "gauge",
    "create_observable_up_down_counter": "gauge",
    "create_histogram": "histogram",
    "create_gauge": "gauge",
    "create_observable_gauge": "gauge",
}
_UNIT_SUFFIX = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes", "1": "_ratio"}


def instruments() -> dict[str, tuple[str, str]]:
    """Instrument name → (kind, unit) for every meter call in services/ and shared/."""
    found: dict[str, tuple[str, str]] = {}
    for folder in ("services", "shared"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _CREATORS
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    continue
                unit = next(
                    (
                        str(k.value.value)
                        for k in node.keywords
                        if k.arg == "unit" and isinstance(k.value, ast.Constant)
                    ),
                    "",
                )
                found[node.args[0].value] = (_CREATORS[node.func.attr], unit)
    return found


def exported_series() -> set[str]:
    """Every series name a Prometheus scrape of the services can show for those instruments."""
    names = set()
    for name, (kind, unit) in instruments().items():
        family = name + _UNIT_SUFFIX.get(unit, "")
        if kind == "counter":
            names.add(family + "_total")
        elif kind == "histogram":
            names.update(family + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family)
    return names
