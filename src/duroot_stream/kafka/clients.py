"""Kafka plumbing shared by every role: client factories, header reading, metadata
and watermarks with the retries a fresh topic needs."""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from duroot_stream.config import ConfigError, KafkaConfig

from .triage import Triage, kafka_error, triage

METADATA_TIMEOUT_S = 10.0
RETRY_WAIT_S = 0.1

Headers = list[tuple[str, bytes | None]]
# A record's headers as confluent-kafka gives them: a list of pairs (or a dict).
RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class ConsumedRecord(Protocol):
    """A consumed record as its readers here use it: confluent-kafka's `Message`, or a
    record a test makes without a broker."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> RawHeaders | None: ...
    def error(self) -> object | None: ...


def new_producer(config: KafkaConfig, **settings: Any) -> Producer:
    """A Producer; a bad `-X` setting is a `ConfigError`."""
    try:
        return Producer(config.client(**settings))
    except KafkaException as exc:
        raise ConfigError(f"producer settings: {exc.args[0].str()}") from None


def new_consumer(config: KafkaConfig, **settings: Any) -> Consumer:
    """A Consumer; a bad `-X` setting is a `ConfigError`."""
    try:
        return Consumer(config.client(**settings))
    except KafkaException as exc:
        raise ConfigError(f"consumer settings: {exc.args[0].str()}") from None


def new_reader(config: KafkaConfig, **settings: Any) -> Consumer:
    """A Consumer for `assign()` only: read_committed, no commits, a group id it never joins."""
    base: dict[str, Any] = {
        "group.id": f"duroot-reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
    return new_consumer(config, **{**base, **settings})


def headers(message: ConsumedRecord) -> Headers:
    """A record's headers as a list of (name, value), in order, duplicates kept."""
    raw = message.headers()
    if raw is None:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


def position(message: ConsumedRecord) -> tuple[int, int]:
    """Partition and offset of a consumed record (always set for those)."""
    partition, offset = message.partition(), message.offset()
    if partition is None or offset is None:
        raise ValueError("not a consumed record: no partition or offset")
    return partition, offset


def header_bytes(message: ConsumedRecord, name: str) -> bytes | None:
    """The last value of header `name`, or None."""
    found: bytes | None = None
    for key, value in headers(message):
        if key == name and value is not None:
            found = value if isinstance(value, bytes) else str(value).encode()
    return found


def header(message: ConsumedRecord, name: str) -> str | None:
    """The last value of header `name` as text (invalid UTF-8 replaced), or None."""
    found = header_bytes(message, name)
    return None if found is None else found.decode("utf-8", "replace")


def partition_count(
    client: Producer | Consumer, topic: str, timeout: float = METADATA_TIMEOUT_S
) -> int | None:
    """The partition count of `topic`; None if it does not exist. Raises
    `KafkaException` when the metadata cannot be read."""
    md = client.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        return None
    return len(t.partitions)


def watermarks(
    consumer: Consumer, topic: str, partition: int, timeout: float = METADATA_TIMEOUT_S
) -> tuple[int, int]:
    """(low, high) offsets of a partition, asking the broker (the high one is the
    last stable offset under read_committed). Retries while the error is
    transient (a topic so new that its leader is not known yet); raises the last
    `KafkaException` when it is not, or when `timeout` has passed."""
    deadline = time.monotonic() + timeout
    tp = TopicPartition(topic, partition)
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or triage(error) is not Triage.RETRY or time.monotonic() > deadline:
                raise
        time.sleep(RETRY_WAIT_S)
