"""`topics create` is idempotent; `topics check` names the topic and the setting that is wrong."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from duroot_stream.cli import main as cli
from duroot_stream.cli import options
from duroot_stream.config import KafkaConfig
from duroot_stream.wire.topics import (
    TopicCheckError,
    Topics,
    check_topics,
    create_topics,
    wait_visible,
)

from .kafka_helpers import wait_until

pytestmark = pytest.mark.broker


def test_create_twice_is_idempotent(kafka: KafkaConfig) -> None:
    first = create_topics(kafka, partitions=3)
    assert len(first) == 5
    assert create_topics(kafka, partitions=3) == []
    counts = check_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    assert counts[topics.commands] == counts[topics.events] == 3
    assert counts[topics.dlq] == 1


def test_cli_topics_create_and_check(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    assert cli.main(["topics", "create", "--partitions", "2", *args]) == 0
    assert cli.main(["topics", "check", *args]) == 0
    out = capsys.readouterr().out
    assert f"ok {kafka.topic_prefix}events partitions=2" in out


def _create(kafka: KafkaConfig, name: str, partitions: int, policy: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    fs = admin.create_topics([NewTopic(name, partitions, 1, config={"cleanup.policy": policy})])
    for f in fs.values():
        f.result()
    wait_visible(admin, [name])


def _create_all_but(kafka: KafkaConfig, skip: str) -> None:
    topics = Topics(kafka.topic_prefix)
    for name, policy in [
        (topics.commands, "delete"),
        (topics.events, "compact"),
        (topics.index, "compact"),
        (topics.replies, "delete"),
        (topics.dlq, "delete"),
    ]:
        if name != skip:
            _create(kafka, name, 4, policy)


def test_check_detects_partition_mismatch(kafka: KafkaConfig) -> None:
    topics = Topics(kafka.topic_prefix)
    _create_all_but(kafka, topics.events)
    _create(kafka, topics.events, 2, "compact")
    with pytest.raises(
        TopicCheckError, match=rf"partitions: {topics.commands} has 4 but {topics.events} has 2"
    ):
        check_topics(kafka)


def test_check_detects_wrong_cleanup_policy(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = Topics(kafka.topic_prefix)
    _create_all_but(kafka, topics.events)
    _create(kafka, topics.events, 4, "delete")
    with pytest.raises(
        TopicCheckError,
        match=rf"cleanup.policy: topic {topics.events} has 'delete', expected 'compact'",
    ):
        check_topics(kafka)
    rc = cli.main(
        ["topics", "check", "-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]
    )
    assert rc == options.EXIT_FAILED
    assert "cleanup.policy" in capsys.readouterr().err


def test_check_reports_missing_topics(kafka: KafkaConfig) -> None:
    with pytest.raises(TopicCheckError, match="is missing"):
        check_topics(kafka)


def test_compaction_removes_a_tombstoned_key(kafka: KafkaConfig) -> None:
    """The cleaner really drops a key whose last record is a tombstone (events topic settings)."""
    name = f"{kafka.topic_prefix}compaction"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for f in admin.create_topics(
        [
            NewTopic(
                name,
                1,
                1,
                config={
                    "cleanup.policy": "compact",
                    "segment.ms": "100",
                    "min.cleanable.dirty.ratio": "0.01",
                    "delete.retention.ms": "100",
                    "min.compaction.lag.ms": "0",
                },
            )
        ]
    ).values():
        f.result()
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(name, key=b"gone", value=b"v1")
    producer.produce(name, key=b"kept", value=b"v1")
    producer.produce(name, key=b"gone", value=None)
    producer.flush(10)

    def keys_in_topic() -> list[bytes]:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": uuid.uuid4().hex,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition(name, 0, -2)])
        keys = []
        try:
            while True:
                msg = consumer.poll(5)
                if msg is None or msg.error():
                    break
                keys.append(msg.key())
        finally:
            consumer.close()
        return keys

    def cleaned() -> bool:
        # Segments roll only on an append after segment.ms: keep appending filler.
        producer.produce(name, key=b"filler", value=b"x")
        producer.flush(10)
        time.sleep(0.2)
        return b"gone" not in keys_in_topic()

    wait_until(cleaned, timeout=90, interval=0.5, what="the cleaner to remove key 'gone'")
    assert b"kept" in keys_in_topic()
