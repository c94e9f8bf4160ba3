"""Fixtures: one real Kafka broker for the whole run, a fresh topic prefix per test;
the slow tests' timeout; the root logger as each test found it."""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from tests.processor_harness import Requester, setup_topics


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A slow test without a timeout of its own gets the reliability scale's bound (the
    others get pyproject.toml's)."""
    slow = [
        i for i in items if i.get_closest_marker("slow") and not i.get_closest_marker("timeout")
    ]
    if slow:
        from tests.reliability.harness import Scale

        bound = Scale.from_env().test_timeout_s
        for item in slow:
            item.add_marker(pytest.mark.timeout(bound))


@pytest.fixture(autouse=True)
def _root_logger_as_found() -> Iterator[None]:
    """`cli.main` sets up logging to the stderr of the moment, a test's capture that
    is closed after it; clients still logging later would write into a closed file.
    Its handlers and level go when the test ends (pytest's own stay pytest's)."""
    root = logging.getLogger()
    handlers, level = set(root.handlers), root.level
    yield
    added = [h for h in root.handlers if h not in handlers and type(h) is logging.StreamHandler]
    for handler in added:
        root.removeHandler(handler)
    if added:
        root.setLevel(level)


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
