"""docker-compose.yml is valid (Debian's docker-compose, no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail(
            "docker-compose not installed: `make test` installs it (scripts/system-deps.sh)"
        )
    result = subprocess.run([tool, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_has_the_whole_stack() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose not installed")
    result = subprocess.run(
        [tool, "config", "--services"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    services = set(result.stdout.split())
    assert {"kafka", "topics", "processor", "runner", "prometheus", "grafana"} <= services


def test_compose_services_expose_metrics_to_prometheus() -> None:
    """Prometheus scrapes from another container: the services must listen beyond loopback."""
    compose = (ROOT / "docker-compose.yml").read_text()
    scrape = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    for service, port in (("processor", "9464"), ("runner", "9465")):
        assert f'"--metrics-port", "{port}", "--metrics-addr", "0.0.0.0"' in compose, service
        assert f"{service}:{port}" in scrape, service
