"""The metrics port: /metrics, /healthz, /readyz, and the build info."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from duroot_stream import metrics
from duroot_stream.serving import Probes, serve
from duroot_stream.version import VERSION


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
    assert f'duroot_build_info{{version="{VERSION}"}} 1.0' in body
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
