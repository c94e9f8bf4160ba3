"""`partition_for` routes keys as the Java client and librdkafka's murmur2_random do."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.wire.partitioning import murmur2, partition_for

# Apache Kafka's UtilsTest.testMurmur2 (clients/src/test/.../utils/UtilsTest.java).
JAVA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS)
def test_murmur2_matches_kafkas_own_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_the_count() -> None:
    # toPositive(-790332482) = 1357151166
    assert partition_for("foobar", 10) == 1357151166 % 10 == 6
    assert partition_for(b"foobar", 10) == 6
    for data, expected in JAVA_VECTORS:
        assert partition_for(data, 7) == (expected & 0x7FFFFFFF) % 7


def _keys() -> list[str]:
    """Workflow ids, plus keys of every tail length (len % 4) and non-ASCII ones."""
    keys = [str(uuid.uuid4()) for _ in range(150)]
    keys += ["x" * n for n in range(1, 13)]
    keys += ["ünïcödé", "日本語のキー", "key/with/0", f"{uuid.uuid4()}/17"]
    return keys


@pytest.mark.broker
def test_partition_for_agrees_with_librdkafka_murmur2_random(kafka: KafkaConfig) -> None:
    topic = f"{kafka.topic_prefix}partitioning"
    partitions = 7
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result()
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    chosen: dict[str, int] = {}
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        key = msg.key()
        assert key is not None
        chosen[key.decode()] = msg.partition() or 0

    keys = _keys()
    for key in keys:
        producer.produce(topic, value=b"", key=key.encode(), on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not errors
    assert len(chosen) == len(keys)
    mismatches = {
        k: (p, partition_for(k, partitions))
        for k, p in chosen.items()
        if p != partition_for(k, partitions)
    }
    assert not mismatches
    assert len(set(chosen.values())) == partitions  # the keys did spread
