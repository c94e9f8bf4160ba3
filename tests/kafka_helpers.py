"""Small helpers for tests that read topics: always with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_all(
    bootstrap: str, topic: str, timeout: float = 30.0, read_committed: bool = True
) -> list[Message]:
    """Every record of every partition of `topic`, from the beginning to the end as of now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "enable.partition.eof": True,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        ends = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > low:
                ends[tp.partition] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, -2) for p in ends])
        out: list[Message] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition() or 0)
                    continue
                raise AssertionError(f"reading {topic}: {error}")
            out.append(msg)
        return out
    finally:
        consumer.close()
