"""asyncapi.yaml: valid AsyncAPI 3.0 by the AsyncAPI CLI, and in step with the code."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from duroot_stream.domain import DuUpdated, WorkflowEvent
from duroot_stream.tracing import TRACEPARENT, TRACESTATE
from duroot_stream.wire import Topics, event_headers

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "asyncapi.yaml"
CLI = ROOT / "scripts" / "asyncapi.sh"
VALIDATE_S = 600  # the first run installs the AsyncAPI CLI from npm
pytestmark = pytest.mark.timeout(VALIDATE_S + 300)  # above pyproject's 600 s


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=VALIDATE_S,
        check=False,
        cwd=path.parent,
    )


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return loaded


def test_the_document_is_valid_asyncapi_3() -> None:
    assert spec()["asyncapi"].startswith("3.")
    result = validate(SPEC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_a_broken_document_is_caught(tmp_path: Path) -> None:
    # The validator itself: an operation on a channel that does not exist.
    broken = spec()
    broken["operations"]["sendCommand"]["channel"]["$ref"] = "#/channels/nowhere"
    (tmp_path / "schemas").symlink_to(ROOT / "schemas")
    path = tmp_path / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = validate(path)
    assert result.returncode != 0, result.stdout


def test_channels_are_the_topics() -> None:
    topics = Topics("duroot.")
    addresses = {c["address"] for c in spec()["channels"].values()}
    assert addresses == {topics.commands, topics.events, topics.index, topics.replies, topics.dlq}


def test_event_headers_are_the_ones_the_processor_writes() -> None:
    event = WorkflowEvent(
        "01JDQ7ZK3P0000000000000002",
        "01JDQ7ZK3P0000000000000001",
        "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab",
        1,
        "01JDQ7ZK3M5V8X9Y0A1B2C3D4E",
        DuUpdated("a", 1),
    )
    written = {name for name, _ in event_headers(event)}
    described = spec()["components"]["schemas"]["eventHeaders"]
    # Always written: required; the trace context only when the command had one.
    assert set(described["required"]) == written
    assert set(described["properties"]) == written | {TRACEPARENT, TRACESTATE}


@pytest.mark.parametrize("name", ["Command", "WorkflowEvent", "WorkflowIndexEvent", "Reply"])
def test_every_schema_file_is_referenced(name: str) -> None:
    assert f"./schemas/{name}.avsc" in SPEC.read_text(encoding="utf-8")
