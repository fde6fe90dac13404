"""Every grpcurl (and curl) example in docs/PHASE_5_API.md, run as written against a live
system: ``$F $L $I $C`` and the ``$RL_*`` tokens point at it, the documented default ports are
replaced by its ports, and each example must succeed — except that an RPC still listed in
``services.cli.contracts.PENDING_IMPLEMENTATION`` may answer Unimplemented.

Examples run in the order of the document (later ones use the finding the first one records),
except deletions, which run last so that the examples after them still find their finding.
An example whose command ends in a comment ``# may answer <Code>`` documents that answer as an
expected one (an AdvanceRollout before the phase's criteria hold).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.contracts import PENDING_IMPLEMENTATION
from tests.conftest import TOKENS
from tests.e2e.live_system import LiveSystem, fresh_live_system

__all__ = ["fresh_live_system"]

DOC = Path(__file__).resolve().parents[2] / "docs/PHASE_5_API.md"
DEFAULT_GRPC = {"feedback": 50051, "learning": 50052, "insights": 50053, "control": 50054}
DEFAULT_METRICS = {"feedback": 9101, "learning": 9102, "insights": 9103, "control": 9104}
VARIABLES = {"F": "feedback", "L": "learning", "I": "insights", "C": "control"}
DESTRUCTIVE = ("/DeleteFinding",)


def examples(markdown: str) -> list[str]:
    """The commands of the ```sh blocks: continuation lines, multi-line quotes and here-docs
    joined into one command each; comment lines dropped."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL):
        pending = ""
        heredoc: str | None = None
        for line in block.splitlines():
            if heredoc is not None:
                pending += line + "\n"
                if line.strip() == heredoc:
                    commands.append(pending)
                    pending, heredoc = "", None
                continue
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line + "\n"
            marker = re.search(r"<<-?'?(\w+)'?", line)
            if marker:
                heredoc = marker.group(1)
                continue
            if line.endswith("\\"):
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # inside a quoted string that spans lines
                continue
            commands.append(pending)
            pending = ""
    return [c for c in commands if c.lstrip().startswith(("grpcurl", "curl"))]


def _allowed(command: str) -> set[str]:
    return set(re.findall(r"#\s*may answer (\w+)", command))


def _method(command: str) -> str:
    found = re.search(r"(reviewlearn\.\w+\.v1\.\w+/\w+|grpc\.health\.v1\.Health/\w+)", command)
    return found.group(1) if found else ""


def test_the_document_has_an_example_for_every_rpc() -> None:
    """Every RPC of every service's proto appears in at least one example (those still pending
    once they land, when their allow-list entry goes)."""
    from reviewlearn.control.v1 import control_pb2
    from reviewlearn.feedback.v1 import feedback_pb2
    from reviewlearn.insights.v1 import insights_pb2
    from reviewlearn.learning.v1 import learning_pb2

    documented = {_method(c) for c in examples(DOC.read_text())}
    missing = []
    for module in (feedback_pb2, learning_pb2, insights_pb2, control_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                name = f"{service.full_name}/{method.name}"
                if name not in documented and name not in PENDING_IMPLEMENTATION:
                    missing.append(name)
    assert missing == []


def test_the_parser_joins_what_a_shell_would() -> None:
    parsed = examples(
        "```sh\n# a comment\ngrpcurl -d '{\n  \"a\": 1}' \\\n  $F x.v1.S/M\n"
        "grpcurl -d @ $F x.v1.S/N <<'EOF'\n{}\nEOF\ncurl -s http://x\n```\n"
    )
    assert parsed == [
        "grpcurl -d '{\n  \"a\": 1}' \\\n  $F x.v1.S/M\n",
        "grpcurl -d @ $F x.v1.S/N <<'EOF'\n{}\nEOF\n",
        "curl -s http://x\n",
    ]


@pytest.fixture(scope="module")
def system_env(fresh_live_system: LiveSystem) -> dict[str, str]:
    env = dict(fresh_live_system.cli_env())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(RL_INGEST=TOKENS["ingest"], RL_READER=TOKENS["reader"])
    env["RL_OPERATOR"] = TOKENS["operator"]
    for variable, service in VARIABLES.items():
        env[variable] = fresh_live_system.address(service)
    return env


def _localised(command: str, system: LiveSystem) -> str:
    for service, port in DEFAULT_GRPC.items():
        command = command.replace(f"127.0.0.1:{port}", system.address(service))
    for service, port in DEFAULT_METRICS.items():
        command = command.replace(f"127.0.0.1:{port}", f"127.0.0.1:{system.metrics_ports[service]}")
    return command


def test_every_example_runs(fresh_live_system: LiveSystem, system_env: dict[str, str]) -> None:
    commands = examples(DOC.read_text())
    assert len(commands) >= 50
    ordered = [c for c in commands if not any(d in c for d in DESTRUCTIVE)]
    ordered += [c for c in commands if any(d in c for d in DESTRUCTIVE)]
    failures = []
    for command in ordered:
        localised = _localised(command, fresh_live_system)
        if "WatchFeatureGates" in localised:  # a stream that waits for news: its first answer
            localised = localised.replace("grpcurl ", "grpcurl -max-time 2 ", 1)
        result = subprocess.run(
            ["bash", "-c", localised],
            env=system_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode == 0:
            continue
        if "WatchFeatureGates" in localised and '"version"' in result.stdout:
            continue  # cut off by -max-time after its first message, as intended
        if _method(command) in PENDING_IMPLEMENTATION and "Code: Unimplemented" in output:
            continue
        if any(f"Code: {code}" in output for code in _allowed(command)):
            continue
        failures.append(f"{command.strip()}\n  → exit {result.returncode}: {output.strip()[:400]}")
    assert failures == [], "\n\n".join(failures)
