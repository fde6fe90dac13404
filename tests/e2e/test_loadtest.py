"""``reviewlearn loadtest`` for a few seconds against ``reviewlearn up``: the report has every
RPC of the mix with its percentiles, every call succeeded, and the verdict is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.live_system import LiveSystem, live_system

__all__ = ["live_system"]

MIX = (
    "RankSuggestions",
    "RecordFindings",
    "BatchRecordFeedback",
    "GetTeamMetrics",
    "GetTrends",
    "EvaluateFeature",
)


def test_loadtest_reports_every_rpc_of_the_mix(live_system: LiveSystem, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    targets = [f"--target={name}={live_system.address(name)}" for name in live_system.grpc_ports]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.app",
            "loadtest",
            "--findings",
            "300",
            "--rate",
            "150",
            "--duration",
            "20",
            "--concurrency",
            "8",
            f"--json={report_file}",
            *targets,
        ],
        env={**live_system.cli_env(), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_file.read_text())
    assert report["findings_recorded"] >= 300
    assert report["events_recorded"] > 0
    assert report["errors"] == {}
    assert report["cores"] == os.cpu_count()
    assert set(MIX) <= set(report["rpcs"])
    for name in MIX:
        rpc = report["rpcs"][name]
        assert rpc["count"] > 0, name
        assert set(rpc["codes"]) == {"OK"}, (name, rpc["codes"])
        assert 0 < rpc["p50_ms"] <= rpc["p95_ms"] <= rpc["p99_ms"], (name, rpc)
        assert 0 < rpc["service_p95_ms"] <= rpc["p95_ms"], (name, rpc)
    assert report["requests"] == sum(r["count"] for r in report["rpcs"].values())
    assert isinstance(report["target_held"], bool)
    assert "plan target p95 < 200 ms at 1,000 req/s" in result.stdout
    assert f"on {os.cpu_count()} cores" in result.stdout
    assert "errors by status code: none" in result.stdout
    assert report["reference_rate"] > 0
    assert "reference, same run: bare health checks at" in result.stdout
    verdict = "HELD" if report["target_held"] else "NOT HELD"
    assert f"at 1,000 req/s: {verdict} (p95 " in result.stdout
