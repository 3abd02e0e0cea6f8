"""``deploy/compose.yaml`` and ``deploy/Dockerfile`` hang together.

No base image can be pulled here, so nothing is built: these checks catch a
renamed path or a broken reference before an operator does.
"""

from __future__ import annotations

import re
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.deploy.conftest import REPO

DEPLOY = REPO / "deploy"


def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_controller_service_builds_from_the_deploy_dockerfile() -> None:
    controller = compose()["services"]["controller"]

    context = (DEPLOY / controller["build"]["context"]).resolve()
    assert context == REPO
    assert (context / controller["build"]["dockerfile"]) == DEPLOY / "Dockerfile"
    assert controller["ports"] == ["8088:8088", "50051:50051"]
    assert controller["volumes"] == ["controller-data:/var/lib/lmstack"]
    assert controller["depends_on"]["postgres"]["required"] is False


def test_postgres_is_optional() -> None:
    services = compose()["services"]

    assert services["postgres"]["profiles"] == ["postgres"]
    assert "ports" not in services["postgres"]
    assert "profiles" not in services["controller"]


def test_dockerfile_uses_python_slim_and_existing_sources() -> None:
    text = (DEPLOY / "Dockerfile").read_text()

    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert bases == ["python:3.11-slim", "python:3.11-slim"]
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        *sources, _dest = line.split()
        assert all((REPO / source).exists() for source in sources), line
    assert re.search(r"^USER lmstack$", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["lmstack-controller"]' in text
