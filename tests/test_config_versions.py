"""One place pins the versions: deploy/kafka/pom.xml's <properties>. The local broker
reads it; docker-compose.yml and the Prometheus the tests use must agree with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from duroot_stream.local.jars import kafka_version

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "deploy" / "kafka" / "pom.xml"


def _pinned(name: str) -> str:
    match = re.search(rf"<{re.escape(name)}>([^<]+)</", POM.read_text())
    assert match, f"{POM}: no <{name}>"
    return match.group(1)


def _image_tag(image: str) -> str:
    compose = (ROOT / "docker-compose.yml").read_text()
    match = re.search(rf"image: {re.escape(image)}:v?([^\s]+)", compose)
    assert match, f"docker-compose.yml: no {image} image"
    return match.group(1)


def test_the_local_broker_runs_the_pinned_kafka() -> None:
    assert kafka_version() == _pinned("kafka.version")


@pytest.mark.parametrize(
    ("image", "prop"),
    [
        ("apache/kafka", "kafka.version"),
        ("prom/prometheus", "prometheus.version"),
        ("grafana/grafana", "grafana.version"),
    ],
)
def test_compose_runs_the_pinned_images(image: str, prop: str) -> None:
    assert _image_tag(image) == _pinned(prop)


@pytest.mark.parametrize("tool", ["prometheus", "promtool"])
def test_the_tests_use_the_pinned_prometheus(tool: str) -> None:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not installed: `make test` installs it (scripts/system-deps.sh)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    assert match.group(1) == _pinned("prometheus.version")
