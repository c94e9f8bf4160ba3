"""A Java program that knows only docs/contract.md and schemas/ drives a workflow.

clients/java: Java's KafkaProducer with its default (murmur2) partitioner,
Avro's BinaryMessageEncoder (single-object encoding) with the .avsc files,
request-reply by headers, then the workflow's events and index entry read
back with read_committed. Built with Maven, like the broker's jars.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from duroot_stream.client import DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import PathUsage, StateCode
from tests.processor_harness import running_processor, setup_topics

BUILD_S, RUN_S = 900, 300  # the Maven build (dependencies fetched once), a run
# The build and a run, and the broker's start, at their longest: above pyproject's 600 s.
pytestmark = [pytest.mark.broker, pytest.mark.timeout(BUILD_S + RUN_S + 300)]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "clients" / "java"
TARGET = PROJECT / "target"


@pytest.fixture(scope="module")
def java_classpath() -> str:
    if shutil.which("mvn") is None or shutil.which("java") is None:
        pytest.fail("java and mvn are needed (scripts/system-deps.sh installs them)")
    build = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(PROJECT / "pom.xml"), "package", "-DskipTests"],
        capture_output=True,
        text=True,
        timeout=BUILD_S,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    jar = TARGET / "duroot-stream-java-example-0.1.0.jar"
    return f"{jar}:{TARGET / 'lib'}/*"


def test_a_java_client_drives_a_workflow_end_to_end(
    kafka: KafkaConfig, java_classpath: str
) -> None:
    setup_topics(kafka)
    with running_processor(kafka):
        run = subprocess.run(
            [
                "java",
                "-cp",
                java_classpath,
                "io.duroot.stream.example.DuRootWorkflow",
                kafka.bootstrap_servers,
                kafka.topic_prefix,
                str(ROOT / "schemas"),
                "fs-java",
                "/srv/java",
                "a=4096",
                "b/c=8192",
            ],
            capture_output=True,
            text=True,
            timeout=RUN_S,
            check=False,
        )
        out = run.stdout
        assert run.returncode == 0, out + run.stderr[-4000:]
        lines = out.splitlines()
        workflow_id = lines[0].removeprefix("workflow ")
        assert [line.split()[:3] for line in lines if line.startswith("reply")] == [
            ["reply", "Init", "ok"],
            ["reply", "Append", "ok"],
            ["reply", "Commit", "ok"],
        ]
        events = [line.split()[1:3] for line in lines if line.startswith("event")]
        assert events == [
            ["0", "STARTED"],
            ["1", "UPDATED"],
            ["2", "UPDATED"],
            ["3", "COMPLETED"],
            ["4", "COMMITTED"],
        ]
        assert any(line.startswith("index DuRootCompleted") for line in lines)
        assert lines[-1] == "done"

    # What the Java client wrote reads back in Python as any other workflow.
    with DuRootReader(kafka) as reader:
        result = reader.get_du(workflow_id)
        status = reader.status(workflow_id)
    assert list(result.lines) == [PathUsage("a", 4096), PathUsage("b/c", 8192)]
    assert status.state is StateCode.TERMINATED
