"""What `processor` and `runner` do before they run: serve `/metrics` and the probes
on the metrics port, and stop on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from duroot_stream import metrics
from duroot_stream.config import KafkaConfig
from duroot_stream.serving import Probe, Probes

PROBE_TIMEOUT_S = 3.0


def kafka_reachable(config: KafkaConfig) -> Probe:
    """A probe that asks Kafka for its metadata (one small admin client, reused)."""
    admin = AdminClient(config.client())
    lock = threading.Lock()  # one probe request at a time, however often it is scraped

    def probe() -> str | None:
        with lock:
            try:
                admin.list_topics(timeout=PROBE_TIMEOUT_S)
            except KafkaException as exc:
                return f"Kafka unreachable at {config.bootstrap_servers}: {exc.args[0]}"
        return None

    return probe


def probes(
    config: KafkaConfig, failed: Callable[[], str | None], ready: Callable[[], str | None]
) -> Probes:
    """`/healthz`: nothing fatal and Kafka reachable; `/readyz`: that, and `ready`."""
    kafka = kafka_reachable(config)

    def alive() -> str | None:
        return failed() or kafka()

    def serving() -> str | None:
        return alive() or ready()

    return Probes(alive, serving)


def start_service(
    log: logging.Logger,
    registry: CollectorRegistry,
    metrics_port: int | None,
    metrics_addr: str,
    stop: Callable[[], None],
    service_probes: Probes,
) -> None:
    """Serve `/metrics`, `/healthz` and `/readyz` on `metrics_addr:metrics_port` when a
    port is given; SIGINT and SIGTERM call `stop`."""
    if metrics_port is not None:
        port = metrics.serve(registry, metrics_port, metrics_addr, service_probes)
        base = f"http://{metrics_addr}:{port}"
        log.info("metrics", extra={"url": f"{base}/metrics", "probes": f"{base}/healthz"})
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop())
