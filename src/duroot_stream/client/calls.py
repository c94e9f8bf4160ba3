"""The Kafka calls the client and the readers make, with the client's errors:
`Unavailable` names what was being done when Kafka did not answer."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from duroot_stream import kafka
from duroot_stream.kafka import METADATA_TIMEOUT_S

from .errors import Unavailable, kafka_unavailable


def topic_partitions(client: Producer | Consumer, topic: str) -> int:
    """The partition count of `topic`; `Unavailable` if Kafka or the topic is missing."""
    try:
        count = kafka.partition_count(client, topic)
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot read the metadata of topic {topic}", exc) from None
    if count is None:
        raise Unavailable(
            f"topic {topic} does not exist (create the topics with `duroot-stream topics create`)"
        )
    return count


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) offsets of a partition; `Unavailable` when Kafka does not answer."""
    try:
        return kafka.watermarks(consumer, topic, partition)
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot read the offsets of {topic}/{partition}", exc) from None


def offset_at(consumer: Consumer, topic: str, partition: int, ms: int) -> int:
    """The first offset whose timestamp is >= `ms`; -1 if there is none."""
    try:
        (found,) = consumer.offsets_for_times(
            [TopicPartition(topic, partition, ms)], timeout=METADATA_TIMEOUT_S
        )
    except KafkaException as exc:
        raise kafka_unavailable(f"cannot look up offsets by time in {topic}", exc) from None
    if found.error is not None:
        raise Unavailable(f"cannot look up offsets by time in {topic}: {found.error}")
    return int(found.offset)
