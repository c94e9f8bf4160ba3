"""The metrics port: /metrics, /healthz, /readyz, and the build info."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from duroot_stream import metrics
from duroot_stream.cli import daemon
from duroot_stream.compiled import BUILD
from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import free_port
from duroot_stream.serving import Probes, serve
from duroot_stream.version import VERSION
from duroot_stream.wire import create_topics
from tests.kafka_helpers import wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_carry_the_build_info() -> None:
    registry = CollectorRegistry()
    metrics.ProcessorMetrics(registry)
    port = metrics.serve(registry, 0)
    status, body = get(port, "/metrics")
    assert status == 200
    assert f'duroot_build_info{{build="{BUILD}",version="{VERSION}"}} 1.0' in body
    assert "duroot_processor_commands_total" in body


@pytest.mark.parametrize(
    ("alive", "ready", "expected"),
    [
        (None, None, ((200, "ok\n"), (200, "ok\n"))),
        (None, "restoring 2 partitions", ((200, "ok\n"), (503, "restoring 2 partitions\n"))),
        ("Kafka unreachable", "Kafka unreachable", ((503, "Kafka unreachable\n"),) * 2),
    ],
)
def test_probes_answer_with_their_verdict(
    alive: str | None, ready: str | None, expected: tuple[tuple[int, str], ...]
) -> None:
    port = serve(CollectorRegistry(), 0, probes=Probes(lambda: alive, lambda: ready))
    assert (get(port, "/healthz"), get(port, "/readyz")) == expected


def test_a_failing_probe_is_a_503_that_says_so() -> None:
    def broken() -> str | None:
        raise RuntimeError("no state yet")

    port = serve(CollectorRegistry(), 0, probes=Probes(broken, broken))
    assert get(port, "/healthz") == (503, "probe failed: no state yet\n")
    assert get(port, "/nope")[0] == 404


@pytest.mark.broker
def test_runner_probes_follow_its_state(kafka: KafkaConfig, tmp_path: Path) -> None:
    create_topics(kafka, partitions=2)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "duroot_stream.cli.main", "runner",
            "--host", "probe-host", "--root", str(tmp_path), "--metrics-port", str(port),
            "-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: get_or_none(port, "/readyz") == (200, "ok\n"), 60, what="runner ready")
        assert get(port, "/healthz") == (200, "ok\n")
        assert "duroot_runner_du_runs_total" in get(port, "/metrics")[1]
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""


def test_an_unreachable_kafka_fails_the_health_probe() -> None:
    config = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")
    alive = daemon.probes(config, lambda: None, lambda: None).alive
    problem = alive()
    assert problem is not None and problem.startswith("Kafka unreachable at 127.0.0.1:")


def get_or_none(port: int, path: str) -> tuple[int, str] | None:
    try:
        return get(port, path)
    except OSError:
        return None  # not listening yet


@pytest.mark.broker
def test_processor_probes_follow_its_state(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=2)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "duroot_stream.cli.main", "processor",
            "--instance-id", f"probe-{port}", "--metrics-port", str(port),
            "-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: get_or_none(port, "/healthz") is not None, 60, what="metrics port")
        wait_until(lambda: get(port, "/readyz") == (200, "ok\n"), 90, what="processor ready")
        assert get(port, "/healthz") == (200, "ok\n")
        assert "duroot_build_info" in get(port, "/metrics")[1]
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""


def test_the_runner_exports_records_held_back_by_open_transactions() -> None:
    registry = CollectorRegistry()
    runner_metrics = metrics.RunnerMetrics(registry)
    stats = {
        "topics": {
            "duroot.index": {
                "partitions": {
                    "0": {"hi_offset": 120, "ls_offset": 100},
                    "1": {"hi_offset": 7, "ls_offset": 7},
                    "-1": {"hi_offset": -1, "ls_offset": -1},
                }
            }
        }
    }
    runner_metrics.on_index_statistics(json.dumps(stats))
    name = "duroot_runner_index_unstable_messages"
    assert registry.get_sample_value(name, {"partition": "0"}) == 20
    assert registry.get_sample_value(name, {"partition": "1"}) == 0
    assert registry.get_sample_value(name, {"partition": "-1"}) is None
