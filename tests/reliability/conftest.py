"""Fixtures of the reliability suite (`make test-reliability`, all marked slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import Listener, LocalBroker, free_port
from duroot_stream.local.cluster import LocalCluster
from tests.reliability.harness import Scale, prepare
from tests.reliability.proxy import FaultProxy


@pytest.fixture(scope="session")
def scale() -> Scale:
    return Scale.from_env()


@pytest.fixture
def reliability_kafka(kafka: KafkaConfig) -> KafkaConfig:
    """The session broker, topics of this test's own, six partitions."""
    prepare(kafka)
    return kafka


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, on a data dir and port that survive a restart."""
    broker = LocalBroker(
        port=free_port(), data_dir=tmp_path / "kafka", log_file=tmp_path / "broker.log"
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three brokers of this test's own (one KRaft quorum, replication 3, min ISR 2)."""
    cluster = LocalCluster(3, base_dir=tmp_path / "cluster", log_dir=tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, FaultProxy]]:
    """A broker of this test's own with a second listener, PROXIED, advertised at a
    fault proxy's port: a client bootstrapped at `proxy.address` talks only through it."""
    listen_port = free_port()
    proxy = FaultProxy(listen_port)
    broker = LocalBroker(
        port=free_port(),
        data_dir=tmp_path / "kafka",
        log_file=tmp_path / "broker.log",
        listeners=[Listener("PROXIED", listen_port, proxy.port)],
    )
    try:
        broker.start()
        yield broker, proxy
    finally:
        proxy.close()
        broker.stop()
