"""The exporter on a real broker: it rebuilds from the events topic, follows it live,
skips what it cannot decode, and two exporters side by side serve the same."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from duroot_stream.client import DuRootClient
from duroot_stream.config import KafkaConfig
from duroot_stream.exporter import Exporter, ExporterSettings
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.processor_harness import running_processor, setup_topics
from tests.usage_helpers import running

pytestmark = pytest.mark.broker

REG = str(uuid.uuid4())
FOLLOW_TIMEOUT_S = 30.0


def usage_samples(exporter: Exporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What `/metrics` says of the roots (duroot_usage_*)."""
    text = generate_latest(exporter.metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("duroot_usage_")
        for s in family.samples
    }


def usage(exporter: Exporter, root: str, path: str) -> float | None:
    labels = {"host": "files1", "root": root, "path": path}
    return exporter.metrics.registry.get_sample_value("duroot_usage_bytes", labels)


def test_exporter_rebuilds_follows_and_skips_the_undecodable(kafka: KafkaConfig) -> None:
    setup_topics(kafka)
    settings = ExporterSettings(kafka, max_depth=1)
    with running_processor(kafka), DuRootClient(kafka) as client:

        def du(root: str, lines: list[tuple[str, int]], fail: bool = False) -> str:
            wf = client.begin(REG, root, "files1", f"/srv{root}").workflow_id
            if lines:
                client.append(wf, lines)
            if fail:
                client.fail(wf, 3, "du failed")
            else:
                client.commit(wf)
            return wf

        du("/g/a", [("a/deep", 10), ("a", 20), (".", 100)])
        du("/g/b", [], fail=True)
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        producer.produce(Topics(kafka.topic_prefix).events, b"\xc3\x01not avro", b"bad/0")
        producer.flush(10)

        with running(Exporter(settings), "exporter") as exporter:
            assert usage(exporter, "/g/a", ".") == 100
            assert usage(exporter, "/g/a", "a") == 20
            assert usage(exporter, "/g/a", "a/deep") is None  # deeper than --max-depth
            registry = exporter.metrics.registry
            failed = {"host": "files1", "root": "/g/b"}
            assert registry.get_sample_value("duroot_usage_last_run_status_code", failed) == 3
            assert registry.get_sample_value("duroot_usage_failed_runs_in_a_row", failed) == 1
            assert registry.get_sample_value("duroot_exporter_undecodable_records_total") == 1

            # Live: a new run of /g/a replaces the old one.
            du("/g/a", [("a", 50), ("c", 5), (".", 160)])
            wait_until(
                lambda: usage(exporter, "/g/a", ".") == 160,
                timeout=FOLLOW_TIMEOUT_S,
                what="the exporter to follow the new run",
            )
            assert usage(exporter, "/g/a", "c") == 5

            # A second exporter, started now, rebuilds the same from the topic.
            with running(Exporter(settings), "second exporter") as second:
                assert usage_samples(second) == usage_samples(exporter)
