"""docker-compose.yml is valid (Debian's docker-compose, no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from duroot_stream.client import load_roots

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
    assert {
        "kafka",
        "topics",
        "processor",
        "runner",
        "exporter",
        "scheduler",
        "prometheus",
        "grafana",
    } <= services


def test_compose_services_expose_metrics_to_prometheus() -> None:
    """Prometheus scrapes from another container: the services must listen beyond loopback."""
    compose = (ROOT / "docker-compose.yml").read_text()
    scrape = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    for service, port in (
        ("processor", "9464"),
        ("runner", "9465"),
        ("exporter", "9466"),
        ("scheduler", "9467"),
    ):
        assert f'"--metrics-port", "{port}", "--metrics-addr", "0.0.0.0"' in compose, service
        assert f"{service}:{port}" in scrape, service


def test_compose_provisions_both_dashboards_and_a_roots_file_the_scheduler_reads() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in compose
    dashboards = {p.name for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert {"duroot-stream.json", "duroot-usage.json"} <= dashboards
    assert "./deploy/scheduler/roots.toml:/etc/duroot/roots.toml:ro" in compose
    roots = load_roots(ROOT / "deploy" / "scheduler" / "roots.toml")
    # The runner serves /data: every scheduled root must lie inside it.
    assert roots and all(
        r.host == "files1" and r.host_root.startswith("/data/") for r in roots.values()
    )
