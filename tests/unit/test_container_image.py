"""The image and the manifests agree: the Dockerfile ends as a non-root user with
``reviewlearn`` as its entry point, copies only what exists, and every Deployment runs
``reviewlearn serve <its service>`` as that same non-root user. (No container engine runs on
the CI machine, so the build itself is not exercised here.)"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/k8s/Dockerfile"
SERVICES = ("feedback", "learning", "insights", "control")


def _instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def _uid() -> int:
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    assert users, "the image must not run as root"
    return int(users[-1].split(":")[0])


def test_the_image_runs_reviewlearn_as_a_non_root_user() -> None:
    instructions = _instructions()
    assert _uid() >= 1000
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["reviewlearn"]
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_every_deployment_serves_its_service_as_the_image_user() -> None:
    uid = _uid()
    for service in SERVICES:
        documents = list(yaml.safe_load_all((ROOT / f"deploy/k8s/base/{service}.yaml").read_text()))
        deployment = next(d for d in documents if d and d["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        container = pod["containers"][0]
        assert container["image"].startswith("reviewlearn")
        assert container["command"] == ["reviewlearn", "serve", service]
