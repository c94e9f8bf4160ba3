"""Processor parts that need no broker: the restore's offset lookup."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from duroot_stream.processor.restore import offsets


class _LeaderComingUp:
    """Answers watermark requests like a partition whose leader is not elected yet, then not."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
        return 3, 17


def test_restore_offsets_retry_while_the_leader_is_not_available() -> None:
    consumer = _LeaderComingUp(failures=2)
    assert offsets(cast(Consumer, consumer), "t.events", 0) == (3, 17)
    assert consumer.calls == 3
