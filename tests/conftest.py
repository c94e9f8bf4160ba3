"""Fixtures: one real Kafka broker for the whole run, a fresh topic prefix per test."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.processor_harness import Requester, setup_topics


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`DUROOT_BOOTSTRAP_SERVERS` if set, else a local broker started for the session."""
    external = os.environ.get("DUROOT_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from duroot_stream.local.broker import LocalBroker

    log_file = Path(tmp_path_factory.mktemp("broker")) / "broker.log"
    with LocalBroker(log_file=log_file) as broker:
        yield broker.bootstrap
        # Destroy clients the tests dropped while the broker still answers, so
        # librdkafka does not log connection failures after the run.
        gc.collect()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka(bootstrap: str, topic_prefix: str) -> KafkaConfig:
    """Settings for one test: the session broker and topics of its own."""
    return KafkaConfig(bootstrap_servers=bootstrap, topic_prefix=topic_prefix)


@pytest.fixture
def requester(kafka: KafkaConfig) -> Iterator[Requester]:
    """Raw commands and their replies on the test's own topics (processor tests)."""
    setup_topics(kafka)
    r = Requester(kafka)
    yield r
    r.close()
