"""Reading the reliability suite's topics back: every committed record of a topic,
the partitions whose last stable offset lags (an open transaction), and the command
partitions whose group offset is not at the end."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.kafka import headers as record_headers
from duroot_stream.wire import Topics

READ_TIMEOUT_S = 300.0  # reading a topic to its end, at the longest


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_topic(
    kafka: KafkaConfig, topic: str, timeout: float = READ_TIMEOUT_S
) -> dict[int, list[Record]]:
    """Every committed record of `topic`, per partition in offset order."""
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": f"reliability-read-{uuid.uuid4().hex}",  # assigned, never joined
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        out: dict[int, list[Record]] = {p: [] for p in partitions}
        pending = set()
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                pending.add(p)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: not at the end after {timeout:.0f} s")
            for m in consumer.consume(10_000, 1.0):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise AssertionError(f"reading {topic}: {error}")
                p, offset = m.partition(), m.offset()
                assert p is not None and offset is not None, "a record has both"
                fields = {name: value or b"" for name, value in record_headers(m)}
                out[p].append(Record(p, offset, m.key(), m.value(), fields))
        return out
    finally:
        consumer.close()


def open_transactions(kafka: KafkaConfig, topics: list[str]) -> list[str]:
    """Partitions whose last stable offset is behind the high watermark."""
    committed = Consumer(
        kafka.client(**{"group.id": "reliability-lso", "isolation.level": "read_committed"})
    )
    uncommitted = Consumer(
        kafka.client(**{"group.id": "reliability-hw", "isolation.level": "read_uncommitted"})
    )
    try:
        behind = []
        for topic in topics:
            for p in committed.list_topics(topic, timeout=30).topics[topic].partitions:
                tp = TopicPartition(topic, p)
                lso = committed.get_watermark_offsets(tp, timeout=30)[1]
                hw = uncommitted.get_watermark_offsets(tp, timeout=30)[1]
                if lso != hw:
                    behind.append(f"{topic}[{p}] lso={lso} hw={hw}")
        return behind
    finally:
        committed.close()
        uncommitted.close()


def unconsumed_commands(kafka: KafkaConfig, group: str = "duroot-processor") -> list[str]:
    """Partitions of the command topic whose committed offset is not at the end."""
    topic = Topics(kafka.topic_prefix).commands
    consumer = Consumer(kafka.client(**{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = [
            TopicPartition(topic, p)
            for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ]
        behind = []
        for tp in consumer.committed(parts, timeout=30):
            high = consumer.get_watermark_offsets(tp, timeout=30)[1]
            if tp.offset != high and not (tp.offset < 0 and high == 0):
                behind.append(f"{topic}[{tp.partition}] committed={tp.offset} end={high}")
        return behind
    finally:
        consumer.close()
